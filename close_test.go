package pgsession_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pgsession/pgsession"
)

// TestCloseStopsEverything runs alone (not in parallel), so that goleak sees
// only this store's goroutines: the listener, its hand-off, the scavenger
// and the purger must all be gone after Close, and the pool must still work.
func TestCloseStopsEverything(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	pool := newPool(t, testDB.url)
	cfg := testConfig(t)
	cfg.ScavengeInterval = time.Millisecond
	cfg.PurgeInterval = 10 * time.Millisecond
	cfg.ListenLease = 200 * time.Millisecond // pings every 50 ms
	s, err := pgsession.New(context.Background(), pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, c := login(t, s, map[any]any{"n": 1})
	get(t, s, c)
	waitFor(t, "the background loops to run", func() bool {
		st := s.Stats()
		return st.PurgeRuns > 0 && pgsession.ScavengeRuns(s) > 0
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pool.Ping(context.Background()); err != nil {
		t.Fatalf("Close closed the caller's pool: %v", err)
	}
	pool.Close()
	goleak.VerifyNone(t, ignore)
}
