package pgsession

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"net/http"
	"time"
)

// Test seams, visible only to this package's tests.

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
	if ok && e.dead {
		return 0, false
	}
	if !ok {
		return 0, false
	}
	return e.version, true
}

// Origin returns the id the store puts in its notifications.
func Origin(s *Store) string { return s.origin }

// ListenerName returns the application_name of the connection the store's
// listener shares with the other Stores of the process on its pool.
func ListenerName(s *Store) string { return s.listener.hub.applicationName() }

// Channel returns the store's notification channel.
func Channel(s *Store) string { return s.cfg.Channel }

// SignCookie signs a cookie value for token tok at version as a store with
// keyPairs does; no database is involved.
func SignCookie(keyPairs [][]byte, name string, tok [32]byte, version int64) (string, error) {
	return cookieOnlyStore(keyPairs).signCookie(name, tok, version)
}

// VerifyCookie verifies a cookie value as a store with keyPairs does.
func VerifyCookie(keyPairs [][]byte, name, value string) (tok [32]byte, version int64, primary, ok bool) {
	return cookieOnlyStore(keyPairs).decodeCookie(name, value)
}

func cookieOnlyStore(keyPairs [][]byte) *Store {
	return &Store{codecs: newCodecs(keyPairs), log: slog.New(slog.DiscardHandler)}
}

// Payloads renders n invalidations of distinct keys as notification payloads.
func Payloads(origin string, n int) []string {
	items := make([]invalidation, n)
	for i := range items {
		items[i].key[0], items[i].key[1] = byte(i), byte(i>>8)
		items[i].version = int64(i + 1)
	}
	return payloads(origin, items)
}

// Scavenge runs one scavenger pass now and returns how many it evicted.
func Scavenge(s *Store) int { return s.scavenge() }

// ScavengeRuns returns how many scavenger passes have run.
func ScavengeRuns(s *Store) int64 { return s.counters.scavengeRuns.Load() }

// SetPurgeBatch sets how many rows one purge statement deletes.
func SetPurgeBatch(s *Store, n int) { s.purgeBatchSize = n }

// PurgeLock returns the keys of the store's purge advisory lock, for
// pg_advisory_xact_lock($1, hashtext($2)).
func PurgeLock(s *Store) (int32, string) { return purgeLockClass, s.sql.table }

// StartPurger runs an automatic purger with interval on s, whose waits go
// through after instead of time.After. s must have been made with a
// negative PurgeInterval. stop ends it.
func StartPurger(s *Store, interval time.Duration, after func(time.Duration) <-chan time.Time) (stop func()) {
	p := newPurger(s, interval)
	p.after = after
	s.purger = p
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.run(ctx)
	}()
	return func() { cancel(); <-done }
}

// QueuedWrites returns how many writes wait behind a commit in flight.
// CommitBusy reports whether s's committer has a commit in flight.
func CommitBusy(s *Store) bool {
	if s.commits == nil {
		return false
	}
	s.commits.mu.Lock()
	defer s.commits.mu.Unlock()
	return s.commits.busy
}

func QueuedWrites(s *Store) int {
	if s.commits == nil {
		return 0
	}
	s.commits.mu.Lock()
	defer s.commits.mu.Unlock()
	return len(s.commits.queue)
}

// WithHandoff returns cfg with the listener's hand-off buffer size and a
// hook run before each notification is applied.
func WithHandoff(cfg Config, size int, hook func()) Config {
	cfg.knobs.handoff, cfg.knobs.applyHook = size, hook
	return cfg
}

// RequestCookie exposes the store's cookie lookup.
func RequestCookie(r *http.Request, name string) (string, bool) {
	v, _, ok := requestCookie(r, name, nil)
	return v, ok
}

// KeyHash returns the key hash of the session with the given ID.
func KeyHash(id string) []byte {
	t, err := parseToken(id)
	if err != nil {
		panic(err)
	}
	k := sha256.Sum256(t[:])
	return k[:]
}

// SignCookieForID signs a cookie for the session ID at version 1 as s does.
func SignCookieForID(s *Store, name, id string) (string, error) {
	t, err := parseToken(id)
	if err != nil {
		return "", err
	}
	return s.signCookie(name, t, 1)
}

// SessionsSQL returns the statement Sessions runs ($1 the user).
func SessionsSQL(s *Store) string { return s.sql.sessions }

// NotifyFunction returns the quoted name of the table's trigger function.
func NotifyFunction(table string) string { return newDDLNames("", table, "").function }

// WithReplicaSample returns cfg whose ReadPool guard samples the primary's
// WAL position every d.
func WithReplicaSample(cfg Config, d time.Duration) Config {
	cfg.knobs.replicaSample = d
	return cfg
}

// ReplicaSamples returns how many WAL positions s's ReadPool guard has
// sampled.
func ReplicaSamples(s *Store) int64 { return s.replica.samples.Load() }

// SingleUpsert returns the statement of a single Save (the first try, with
// the lock timeout) and the payload prefix of s's notifications.
func SingleUpsert(s *Store) (sql, prefix string) { return s.sql.upsertNoWait, s.prefix }
