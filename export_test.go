package pgsession

import (
	"crypto/sha256"
	"time"
)

// Test seams, visible only to this package's tests.

// SetClock replaces the store's local clock.
func SetClock(s *Store, now func() time.Time) { s.now = now }

// FlightWaiters returns how many Gets wait on the database load of the
// session with the given ID.
func FlightWaiters(s *Store, id string) int {
	t, err := parseToken(id)
	if err != nil {
		panic(err)
	}
	return s.flight.waiters(sha256.Sum256(t[:]))
}

// DDL returns the schema.sql that New would run for these names.
func DDL(schema, table string) string { return ddl(schema, table) }

// Cached reports whether the session with the given ID is in the cache, and
// its cached version.
func Cached(s *Store, id string) (int64, bool) {
	t, err := parseToken(id)
	if err != nil {
		panic(err)
	}
	e, ok := s.cache.peek(sha256.Sum256(t[:]))
	if !ok {
		return 0, false
	}
	return e.version, true
}
