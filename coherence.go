package pgsession

import (
	"fmt"
	"time"
)

// Coherence is how far a Store keeps the caches of the instances sharing
// its table in step with each other: Config.Coherence.
type Coherence int

const (
	// CoherenceAll notifies every write: every change of a session's
	// values or version (a save, a logout) reaches every instance's cache
	// within milliseconds; only expiry-only refreshes and touches go
	// unnotified. Each notifying commit takes PostgreSQL's cluster-wide
	// notify lock and wakes every listening instance, so its cost grows
	// with the number of instances. The default.
	CoherenceAll Coherence = iota

	// CoherenceRevocations notifies only what ends a session: logouts
	// (Save with MaxAge < 0, Delete, Revoke, LogoutUser, LogoutOthers, the
	// old token of Regenerate or of a login), Clear, and changes made to
	// the table by plain SQL (its triggers). Saves, expiry refreshes and
	// touches send no notification. A client always reads its own writes,
	// on every instance, through the version its cookie carries; another
	// client, whose cookie is older, may be served an older version of
	// the session for at most Config.MaxStale, after which a cached entry
	// is read again from the database (with a ReadPool, a copy the
	// standby answered is as old as the standby's replay, so a lagging
	// standby cannot renew it). A save that shortens a session's
	// lifetime (a smaller MaxAge) likewise reaches the other instances'
	// caches within MaxStale. For large fleets, where a notification per
	// write to every instance costs more than it is worth.
	//
	// Every instance sharing a table should use the same mode: one in
	// CoherenceAll beside instances that do not notify saves would keep
	// an older copy for older cookies until it leaves its cache (MaxIdle).
	CoherenceRevocations
)

// DefaultMaxStale is the default Config.MaxStale.
const DefaultMaxStale = 30 * time.Second

// String returns the mode's name: "all" or "revocations".
func (c Coherence) String() string {
	switch c {
	case CoherenceAll:
		return "all"
	case CoherenceRevocations:
		return "revocations"
	}
	return fmt.Sprintf("Coherence(%d)", int(c))
}

// current reports whether the cached entry e may still serve without the
// database being asked: always under CoherenceAll, where every change is
// notified. Under CoherenceRevocations, where saves are not, a live entry
// only while it was written, loaded or refreshed here less than MaxStale
// ago; a dead one always, since a logout is final until its tombstone
// expires (and the entry with it).
func (s *Store) current(e entry, now time.Time) bool {
	return s.cfg.Coherence == CoherenceAll || e.dead || s.cache.at(now)-e.filled < int64(s.cfg.MaxStale)
}
