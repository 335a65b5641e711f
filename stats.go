package pgsession

import (
	"encoding/json"
	"sync/atomic"
	"time"
)

// Stats is a snapshot of a Store's counters, from its creation on. Every
// counter only grows; Entries, Listener and ListenerDowntime are current
// values. It marshals to JSON with the field names as keys, Listener as
// text ("up", "down", "off") and ListenerDowntime in seconds.
type Stats struct {
	// Reads and writes.
	CacheHits      int64 // Gets served from the in-process cache
	CacheMisses    int64 // Gets of a valid cookie that the cache could not serve (absent, stale, or the listener down)
	Loads          int64 // SELECTs run for cache misses (concurrent misses of one session share one)
	Saves          int64 // sessions written to the database (insert or update), Regenerate included
	SavesSkipped   int64 // Saves that needed no database round trip: values and expiry unchanged
	Refreshes      int64 // Saves of unchanged values that only extended the stored expiry
	Deletes        int64 // sessions deleted (Save with MaxAge < 0, Delete) that existed
	Revocations    int64 // sessions logged out by Revoke, LogoutUser and LogoutOthers
	InvalidCookies int64 // cookies that failed verification (tampered, foreign key, truncated)
	Errors         int64 // operations that returned an error
	Entries        int64 // sessions in the cache now
	CacheBytes     int64 // what the cached sessions count against Config.CacheBytes now: their data plus ~200 bytes each

	// Coherence across instances.
	Notifications      int64         // invalidation notifications received, this store's own echoes included
	NotifyEvictions    int64         // cache entries evicted by another instance's notification
	BadNotifications   int64         // malformed notifications on the channel, ignored
	ListenerReconnects int64         // times the listener reconnected after losing its connection
	CacheDrops         int64         // times the whole cache was dropped (reconnect, hand-off overflow, Clear elsewhere)
	ListenerDowntime   time.Duration // total time the listener was down, the current outage included
	Listener           ListenerState // the listener's state now: ListenerUp only while it heard a probe of its own within ListenLease
	ProbeErrors        int64         // probes (notifications to itself, every ListenLease/4) that could not be sent
	NotifyQueueUsage   float64       // pg_notification_queue_usage() at the last probe: the cluster's NOTIFY queue, 0 to 1; writes fail when it is full
	Revalidations      int64         // Gets whose cached copy was older than MaxStale, so read again from the database (CoherenceRevocations; counted in CacheMisses too)

	// Idle entries and expired rows.
	Scavenged    int64 // cache entries evicted for being idle longer than MaxIdle (or expired)
	PurgeRuns    int64 // purge rounds this instance ran (automatic and PurgeExpired)
	RowsPurged   int64 // expired rows this instance deleted
	PurgeSkipped int64 // purge rounds skipped because another instance was purging

	// Group commit.
	Batches       int64 // commits that carried more than one write
	BatchedWrites int64 // writes that went in such a commit
	BatchRetries  int64 // batches that failed and were retried write by write
	LockWaits     int64 // writes whose row another transaction held, so they went alone and waited for it

	// Touches (IdleTimeout).
	TouchesSent   int64 // sessions whose row a touch was sent to extend, for reads of them
	TouchesFailed int64 // sessions whose touch failed (or was not scheduled: too many pending)

	// Reads from a replica (Config.ReadPool). Loads - ReplicaReads is the
	// loads the primary answered.
	ReplicaReads     int64 // loads answered by the ReadPool
	ReplicaFallbacks int64 // loads the ReadPool answered too stale to use (lag), then read from the primary
	ReplicaErrors    int64 // loads whose read of the ReadPool failed, then read from the primary
}

// MarshalJSON renders the snapshot for dashboards: field names as keys,
// the listener state as text and ListenerDowntime in seconds.
func (st Stats) MarshalJSON() ([]byte, error) {
	type fields Stats // the same fields, without this method
	return json.Marshal(struct {
		fields
		ListenerDowntime float64 // seconds; hides fields.ListenerDowntime
	}{fields(st), st.ListenerDowntime.Seconds()})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (st *Stats) UnmarshalJSON(b []byte) error {
	type fields Stats
	var v struct {
		fields
		ListenerDowntime float64
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*st = Stats(v.fields)
	st.ListenerDowntime = time.Duration(v.ListenerDowntime * float64(time.Second))
	return nil
}

// counters are the live, always-on counters behind Stats.
type counters struct {
	hits sharded // counted by every cache hit, on every core

	misses, loads, saves, skipped, refreshes, deletes, invalid, errors, revocations atomic.Int64

	notifications, evictions, badNotifications, reconnects, drops, probeErrors, revalidations atomic.Int64

	scavenged, scavengeRuns, purgeRuns, rowsPurged, purgeSkipped atomic.Int64

	batches, batchedWrites, batchRetries, lockWaits atomic.Int64

	touchesSent, touchesFailed atomic.Int64

	replicaReads, replicaFallbacks, replicaErrors atomic.Int64
}

// sharded is a counter spread over cache lines, so that cores counting
// at once, for different sessions, do not contend for one line.
type sharded [8]struct {
	n atomic.Int64
	_ [56]byte
}

// add counts one, in the shard of i (any byte that spreads the counts).
func (c *sharded) add(i byte) { c[i&7].n.Add(1) }

func (c *sharded) load() int64 {
	var n int64
	for i := range c {
		n += c[i].n.Load()
	}
	return n
}

// Stats returns a snapshot of the store's counters. It is cheap and safe to
// call at any time, also after Close.
func (s *Store) Stats() Stats {
	c := &s.counters
	st := Stats{
		CacheHits:      c.hits.load(),
		CacheMisses:    c.misses.Load(),
		Loads:          c.loads.Load(),
		Saves:          c.saves.Load(),
		SavesSkipped:   c.skipped.Load(),
		Refreshes:      c.refreshes.Load(),
		Deletes:        c.deletes.Load(),
		Revocations:    c.revocations.Load(),
		InvalidCookies: c.invalid.Load(),
		Errors:         c.errors.Load(),
		Entries:        int64(s.cache.len()),
		CacheBytes:     s.cache.size(),

		Notifications:      c.notifications.Load(),
		NotifyEvictions:    c.evictions.Load(),
		BadNotifications:   c.badNotifications.Load(),
		ListenerReconnects: c.reconnects.Load(),
		CacheDrops:         c.drops.Load(),
		ProbeErrors:        c.probeErrors.Load(),
		Revalidations:      c.revalidations.Load(),

		Scavenged:    c.scavenged.Load(),
		PurgeRuns:    c.purgeRuns.Load(),
		RowsPurged:   c.rowsPurged.Load(),
		PurgeSkipped: c.purgeSkipped.Load(),

		Batches:       c.batches.Load(),
		BatchedWrites: c.batchedWrites.Load(),
		BatchRetries:  c.batchRetries.Load(),
		LockWaits:     c.lockWaits.Load(),

		TouchesSent:   c.touchesSent.Load(),
		TouchesFailed: c.touchesFailed.Load(),

		ReplicaReads:     c.replicaReads.Load(),
		ReplicaFallbacks: c.replicaFallbacks.Load(),
		ReplicaErrors:    c.replicaErrors.Load(),
	}
	if l := s.listener; l != nil {
		st.ListenerDowntime = l.downTime()
		st.Listener = l.currentState()
		st.NotifyQueueUsage = l.notifyQueueUsage()
	}
	return st
}
