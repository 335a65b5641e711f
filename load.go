package pgsession

import (
	"context"
	"errors"
	"time"

	"github.com/gorilla/sessions"
	"github.com/jackc/pgx/v5"
)

// The read path: a Get is served from the cache while the listener is
// alive, else by one SELECT shared by every concurrent Get of the session.

// cacheUsable reports whether the cache may serve reads now: only while
// the listener is connected and proved itself alive within the lease.
func (s *Store) cacheUsable() bool {
	return s.listener != nil && s.listener.alive()
}

// cacheUsableAt is cacheUsable for now, a time just read from the store's
// clock. With the real clock, its monotonic reading is the listener's
// clock too: a cache hit reads the clock once.
func (s *Store) cacheUsableAt(now time.Time) bool {
	if s.listener == nil {
		return false
	}
	if s.realClock {
		return s.listener.aliveAt(int64(now.Sub(s.listener.base)))
	}
	return s.listener.alive()
}

// lookup returns the entry for k, from the cache when it holds a version
// at least minVersion, else from the database; ok is false for a session
// that does not exist or has expired. A session logged out after the
// client's version is a dead entry.
func (s *Store) lookup(ctx context.Context, k keyHash, minVersion int64) (e entry, ok bool, err error) {
	// The one clock read of a cache hit: it checks the listener's lease
	// and the expiry, and marks the entry used.
	now := s.now()
	usable := s.cacheUsableAt(now)
	if usable {
		if e, ok, due := s.cache.get(k, now, s.touchEvery); ok && e.version >= minVersion {
			if s.current(e, now) {
				s.counters.hits.add(k[0])
				if due {
					s.touches.schedule(k)
				}
				return e, true, nil
			}
			s.counters.revalidations.Add(1) // older than MaxStale: read again
		}
	}
	s.counters.misses.Add(1)
	for {
		p, leader, err := s.flight.do(ctx, k, func() (*entry, error) {
			// Another flight may have filled the cache while we waited.
			if e, ok := s.cache.peek(k); ok && usable && s.fresh(e, minVersion, s.now()) {
				return &e, nil
			}
			return s.load(ctx, k, minVersion)
		})
		// A leader whose own request was canceled fails its followers with
		// its context's error; a follower whose request goes on tries again.
		if err != nil && !leader && ctx.Err() == nil &&
			(errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
			continue
		}
		// The shared read may have started before the write this client
		// was already given: it reads again itself. So does a client with
		// a version that a standby's "no such row" was good enough for.
		if err == nil && !leader && (p != nil && p.version < minVersion || p == nil && minVersion > 0 && s.replica != nil) {
			p, err = s.load(ctx, k, minVersion)
		}
		if err != nil || p == nil {
			return entry{}, false, err
		}
		return *p, true, nil
	}
}

// fresh reports whether a cached entry may serve a client that has seen
// version minVersion. A dead entry serves a client whose cookie is older
// than the logout: a replay of a logged-out session's cookie costs no
// query. It lives no longer than its tombstone's row, so it can never hide
// a session written again after the tombstone was purged.
func (s *Store) fresh(e entry, minVersion int64, now time.Time) bool {
	return e.version >= minVersion && s.cache.alive(e, now) && s.current(e, now)
}

// load reads k from the database, for a client that has seen minVersion,
// and fills the cache with it: a live row as an entry, a tombstone as a
// dead one. With a ReadPool, it reads the standby first, and the primary
// when the standby's answer may be stale (replica.go).
func (s *Store) load(ctx context.Context, k keyHash, minVersion int64) (*entry, error) {
	rt := s.cache.begin(k) // the fill-race guard covers both reads
	start := s.now()
	s.counters.loads.Add(1)
	row, ok, err := s.readReplica(ctx, k, minVersion)
	if err == nil && !ok {
		start = s.now()
		err = s.pool.QueryRow(ctx, s.sql.load, k[:]).Scan(&row.data, &row.version, &row.exp, &row.dbNow, &row.dead)
		row.found = err == nil
		if errors.Is(err, pgx.ErrNoRows) {
			err = nil
		}
	}
	if err != nil || !row.found {
		s.cache.end(k)
		return nil, err
	}
	data, version, dead, exp, dbNow := row.data, row.version, row.dead, row.exp, row.dbNow
	// The remaining lifetime is measured on the database clock alone and
	// counted from before the query was sent, so the cache gives the entry
	// up no later than the database does.
	e := s.cache.newEntry(data, version, start.Add(exp.Sub(dbNow)), start)
	if row.dated {
		// A standby's row is known to be the row only as of the WAL
		// sample its replay reached: MaxStale counts from then.
		e.filled = min(e.filled, row.asOf)
	}
	e.dead = dead
	s.cache.add(k, e, rt)
	if !dead && s.touches != nil {
		s.touches.scheduleLoaded(k, start) // a read is activity (IdleTimeout)
	}
	return &e, nil
}

// decodeValues decodes data, served to the cookie v, into
// session.Values. From the cookie's second request on (hit), the memo keeps
// the decoded values of small sessions, and copies them.
func (s *Store) decodeValues(session *sessions.Session, v *verified, hit bool, data []byte) error {
	if hit {
		values, done, err := s.values(v, data)
		if done {
			if values != nil {
				session.Values = values
			}
			return err
		}
	}
	return s.deserialize(data, session.Values)
}

// deserialize decodes a cache entry's data. DefaultSerializer's strings
// share the entry's memory, which is never modified, instead of copying it.
func (s *Store) deserialize(data []byte, values map[any]any) error {
	if d, ok := s.cfg.Serializer.(DefaultSerializer); ok {
		return d.deserialize(data, values, true)
	}
	return s.cfg.Serializer.Deserialize(data, values)
}
