package pgsession_test

import (
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Writers waiting for one locked row each hold a pool connection: with as
// many of them as the pool has connections, every other session's Save
// stalls behind the one lock again.
func TestLockWaitersDoNotExhaustThePool(t *testing.T) {
	cfg := testConfig(t)
	pcfg, err := pgxpool.ParseConfig(testDB.url)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.MaxConns = 4
	s := newStore(t, newPoolConfig(t, pcfg), cfg)
	locked, _ := login(t, s, map[any]any{"n": 0})
	other, _ := login(t, s, map[any]any{"n": 0})
	unlock := lockRow(t, cfg.Table, locked.ID)
	defer unlock()

	var wg sync.WaitGroup
	for i := range 4 { // e.g. four tabs of the same user
		wg.Go(func() {
			sess := get(t, s, nil)
			sess.ID = locked.ID
			sess.Values["n"] = i + 1
			saveWithin(s, sess, 5*time.Second)
		})
	}
	waitFor(t, "the lock waits", func() bool { return s.Stats().LockWaits >= 1 })
	other.Values["n"] = 1
	took, err := saveWithin(s, other, 2*time.Second)
	if err != nil || took > time.Second {
		t.Errorf("unlocked session's Save: %v after %v; want success within 1s", err, took)
	}
	unlock()
	wg.Wait()
}
