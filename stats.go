package pgsession

import (
	"sync/atomic"
	"time"
)

// Stats is a snapshot of a Store's counters, from its creation on.
type Stats struct {
	CacheHits      int64 // Gets served from the in-process cache
	CacheMisses    int64 // Gets of a valid cookie that the cache could not serve
	Loads          int64 // SELECTs run for cache misses (concurrent misses of one session share one)
	Saves          int64 // sessions written to the database (insert or update)
	SavesSkipped   int64 // Saves that needed no database round trip: values and expiry unchanged
	Refreshes      int64 // Saves of unchanged values that only extended the stored expiry
	Deletes        int64 // sessions deleted (Save with MaxAge < 0)
	InvalidCookies int64 // cookies that failed verification (tampered, foreign key, truncated)
	Errors         int64 // operations that returned an error
	Entries        int64 // sessions in the cache now

	Notifications      int64         // invalidation notifications received
	NotifyEvictions    int64         // cache entries evicted by a notification
	BadNotifications   int64         // malformed notifications, ignored
	ListenerReconnects int64         // times the listener reconnected after losing its connection
	CacheDrops         int64         // times the whole cache was dropped (reconnect, hand-off overflow)
	ListenerDown       time.Duration // total time the listener was down, the current outage included
	Listener           ListenerState // the listener's state now

	Scavenged    int64 // cache entries evicted for being idle longer than MaxIdle (or expired)
	PurgeRuns    int64 // purge rounds this instance ran (automatic and PurgeExpired)
	RowsPurged   int64 // expired rows this instance deleted
	PurgeSkipped int64 // purge rounds skipped because another instance was purging

	Batches       int64 // commits that carried more than one write
	BatchedWrites int64 // writes that went in such a commit
	BatchRetries  int64 // batches that failed and were retried write by write
}

// counters are the live, always-on counters behind Stats.
type counters struct {
	hits, misses, loads, saves, skipped, refreshes, deletes, invalid, errors atomic.Int64

	notifications, evictions, badNotifications, reconnects, drops atomic.Int64

	scavenged, scavengeRuns, purgeRuns, rowsPurged, purgeSkipped atomic.Int64

	batches, batchedWrites, batchRetries atomic.Int64
}

// Stats returns a snapshot of the store's counters. It is cheap and safe to
// call at any time, also after Close.
func (s *Store) Stats() Stats {
	c := &s.counters
	st := Stats{
		CacheHits:      c.hits.Load(),
		CacheMisses:    c.misses.Load(),
		Loads:          c.loads.Load(),
		Saves:          c.saves.Load(),
		SavesSkipped:   c.skipped.Load(),
		Refreshes:      c.refreshes.Load(),
		Deletes:        c.deletes.Load(),
		InvalidCookies: c.invalid.Load(),
		Errors:         c.errors.Load(),
		Entries:        int64(s.cache.len()),

		Notifications:      c.notifications.Load(),
		NotifyEvictions:    c.evictions.Load(),
		BadNotifications:   c.badNotifications.Load(),
		ListenerReconnects: c.reconnects.Load(),
		CacheDrops:         c.drops.Load(),

		Scavenged:    c.scavenged.Load(),
		PurgeRuns:    c.purgeRuns.Load(),
		RowsPurged:   c.rowsPurged.Load(),
		PurgeSkipped: c.purgeSkipped.Load(),

		Batches:       c.batches.Load(),
		BatchedWrites: c.batchedWrites.Load(),
		BatchRetries:  c.batchRetries.Load(),
	}
	if l := s.listener; l != nil {
		st.ListenerDown = l.downTime()
		st.Listener = l.currentState()
	}
	return st
}
