package pgsession_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jackc/pgx/v5"

	"github.com/pgsession/pgsession"
)

func TestConcurrentMissesShareOneQuery(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	writer := newStore(t, testDB.pool, cfg)
	sess, c := login(t, writer, map[any]any{"n": 7})
	reader := newStore(t, testDB.pool, cfg) // cold cache

	// Hold the table so the first load blocks, and every other Get piles up
	// behind it.
	ctx := context.Background()
	tx, err := testDB.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "LOCK TABLE "+pgx.Identifier{cfg.Table}.Sanitize()+" IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	const n = 20
	wait := goEach(t, n, func(int) error {
		got, err := reader.Get(request(c), cookieName)
		if err == nil && got.Values["n"] != 7 {
			err = errors.New("wrong values")
		}
		return err
	})
	waitFor(t, "all Gets to wait on one load", func() bool { return pgsession.FlightWaiters(reader, sess.ID) == n-1 })
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	wait()
	if st := reader.Stats(); st.Loads != 1 {
		t.Fatalf("%d concurrent misses ran %d loads, want 1", n, st.Loads)
	}
}

// A Get whose cookie carries version 2 joins a shared read that started
// before version 2 was written: it must not be served version 1.
func TestSharedReadHonoursEachCookieVersion(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	writer := newStore(t, testDB.pool, cfg)
	sess, c1 := login(t, writer, map[any]any{"v": "one"})

	gate := &gateTracer{}
	pcfg, err := pgxpool.ParseConfig(testDB.url)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.ConnConfig.Tracer = gate
	r := newStore(t, newPoolConfig(t, pcfg), cfg)

	gate.arm()
	go func() { _, _ = r.Get(request(c1), cookieName) }() // reads v1, held at the gate
	<-gate.reached

	s2 := get(t, writer, c1)
	s2.Values["v"] = "two"
	c2 := save(t, writer, s2) // this client now holds version 2

	got := make(chan any, 1)
	go func() {
		sess, err := r.Get(request(c2), cookieName)
		if err != nil {
			got <- err
			return
		}
		got <- sess.Values["v"]
	}()
	waitFor(t, "follower", func() bool { return pgsession.FlightWaiters(r, sess.ID) == 1 })
	close(gate.release)
	if v := <-got; v != "two" {
		t.Fatalf("client holding version 2 was served %v", v)
	}
}
