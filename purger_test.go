package pgsession_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgsession/pgsession"
)

// insertExpired adds n expired rows straight into the table.
func insertExpired(t testing.TB, table string, n int) {
	t.Helper()
	_, err := testDB.pool.Exec(context.Background(), `INSERT INTO `+pgx.Identifier{table}.Sanitize()+
		` (key_hash, data, expires_at) SELECT sha256(i::text::bytea || $2::bytea), '\x01'::bytea, now() - interval '1 minute'
		FROM generate_series(1, $1) i`, n, randomBytes(8))
	if err != nil {
		t.Fatal(err)
	}
}

// liveRows counts the rows of sessions not deleted (tombstones excluded).
func liveRows(t testing.TB, table string) int {
	t.Helper()
	var n int
	if err := testDB.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{table}.Sanitize()+" WHERE NOT deleted").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// countRows counts every row, tombstones included.
func countRows(t testing.TB, table string) int {
	t.Helper()
	var n int
	if err := testDB.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{table}.Sanitize()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPurgeRemovesExactlyTheExpiredInBatches(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.PurgeInterval = -1
	counter := &statementCounter{match: "DELETE FROM"}
	s := newStore(t, tracedPool(t, counter), cfg)
	pgsession.SetPurgeBatch(s, 10)
	var live []*http.Cookie
	for i := range 3 {
		_, c := login(t, s, map[any]any{"n": i})
		live = append(live, c)
	}
	insertExpired(t, cfg.Table, 25)

	n, err := s.PurgeExpired(context.Background())
	if err != nil || n != 25 {
		t.Fatalf("PurgeExpired = %d, %v; want 25", n, err)
	}
	if got := counter.n.Load(); got != 3 {
		t.Fatalf("%d purge statements for 25 rows in batches of 10, want 3", got)
	}
	if rows := countRows(t, cfg.Table); rows != 3 {
		t.Fatalf("%d rows left, want the 3 live ones", rows)
	}
	for i, c := range live {
		if got := get(t, newStore(t, testDB.pool, cfg), c); got.Values["n"] != i {
			t.Fatalf("live session %d lost by the purge", i)
		}
	}
	if st := s.Stats(); st.PurgeRuns != 1 || st.RowsPurged != 25 || st.PurgeSkipped != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestOnlyOneInstancePurgesAtATime(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.PurgeInterval = -1
	ctx := context.Background()

	// a is held inside its first batch, with the purge lock taken.
	hold := &statementCounter{match: "DELETE FROM", hold: make(chan struct{}), held: make(chan struct{})}
	a := newStore(t, tracedPool(t, hold), cfg)
	b := newStore(t, testDB.pool, cfg)
	pgsession.SetPurgeBatch(a, 100)
	pgsession.SetPurgeBatch(b, 100)
	insertExpired(t, cfg.Table, 1000)

	type result struct {
		n   int64
		err error
	}
	ra := make(chan result, 1)
	go func() {
		n, err := a.PurgeExpired(ctx)
		ra <- result{n, err}
	}()
	<-hold.held
	if n, err := b.PurgeExpired(ctx); n != 0 || err != nil {
		t.Fatalf("b purged %d, %v while a held the lock; want a skipped round", n, err)
	}
	close(hold.hold)
	r := <-ra
	if r.err != nil || r.n != 1000 {
		t.Fatalf("a purged %d, %v; want 1000", r.n, r.err)
	}
	if st := b.Stats(); st.PurgeSkipped != 1 || st.PurgeRuns != 0 {
		t.Fatalf("b stats %+v, want one skipped round", st)
	}

	// Both at once, free running: every row removed once, no error.
	insertExpired(t, cfg.Table, 3000)
	var total atomic.Int64
	c := newStore(t, testDB.pool, cfg)
	pgsession.SetPurgeBatch(c, 100)
	purgers := []*pgsession.Store{b, c}
	goEach(t, len(purgers), func(i int) error {
		for { // until the table has nothing expired left
			n, err := purgers[i].PurgeExpired(ctx)
			if err != nil {
				return err
			}
			total.Add(n)
			if countRows(t, cfg.Table) == 0 {
				return nil
			}
		}
	})()
	if total.Load() != 3000 {
		t.Fatalf("purged %d rows in all, want 3000", total.Load())
	}
}

func TestAutomaticPurgeIsJitteredAndCountedFromTheLastPurge(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.PurgeInterval = -1
	s := newStore(t, testDB.pool, cfg)
	const interval = time.Hour
	waits := make(chan time.Duration, 16)
	fire := make(chan time.Time)
	stop := pgsession.StartPurger(s, interval, func(d time.Duration) <-chan time.Time {
		waits <- d
		return fire
	})
	defer stop()
	next := func() time.Duration {
		t.Helper()
		select {
		case d := <-waits:
			if d < interval/2 || d > interval*3/2 {
				t.Fatalf("purge interval %v, want within +/-50%% of %v", d, interval)
			}
			return d
		case <-time.After(10 * time.Second):
			t.Fatal("the purger did not start a wait")
		}
		return 0
	}
	next()
	insertExpired(t, cfg.Table, 5)
	fire <- time.Now() // the automatic purge is due
	next()             // it ran, and waits again
	if st := s.Stats(); st.RowsPurged != 5 || st.PurgeRuns != 1 {
		t.Fatalf("after the automatic purge: %+v", st)
	}
	if _, err := s.PurgeExpired(context.Background()); err != nil {
		t.Fatal(err)
	}
	next() // a manual purge restarts the wait
	seen := map[time.Duration]bool{}
	for range 8 { // and the waits are jittered
		if _, err := s.PurgeExpired(context.Background()); err != nil {
			t.Fatal(err)
		}
		seen[next()] = true
	}
	if len(seen) < 2 {
		t.Fatal("the purge interval is not jittered")
	}
}
