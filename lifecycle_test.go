package pgsession_test

import (
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgsession/pgsession"
)

func TestScavengerEvictsExactlyTheIdle(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.ScavengeInterval = -1 // passes run by hand below
	clk := newClock()
	s := newStoreClock(t, testDB.pool, cfg, clk.Now)

	var ids []string
	var cookies []*http.Cookie
	for i := range 6 {
		sess, c := login(t, s, map[any]any{"n": i})
		ids, cookies = append(ids, sess.ID), append(cookies, c)
	}
	clk.Advance(3 * time.Minute)
	for _, c := range cookies[3:] {
		get(t, s, c) // used 3 minutes in: stays
	}
	clk.Advance(3 * time.Minute) // the first three are now idle for 6 > 5 minutes

	if n := pgsession.Scavenge(s); n != 3 {
		t.Fatalf("scavenged %d, want 3", n)
	}
	for i, id := range ids {
		_, cached := pgsession.Cached(s, id)
		if cached != (i >= 3) {
			t.Fatalf("session %d: cached %v after the scavenge, want %v", i, cached, i >= 3)
		}
	}
	if st := s.Stats(); st.Scavenged != 3 || st.Entries != 3 {
		t.Fatalf("stats %+v, want 3 scavenged, 3 entries", st)
	}
	// Scavenged is not logged out: the next read loads it again.
	if got := get(t, s, cookies[0]); got.IsNew || got.Values["n"] != 0 {
		t.Fatalf("a scavenged session was lost: %v", got.Values)
	}
	if n := pgsession.Scavenge(s); n != 0 {
		t.Fatalf("a second pass scavenged %d fresh entries", n)
	}
}

func TestScavengerRunsAndDisabledNeverDoes(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	clk := newClock()
	cfg.ScavengeInterval = 5 * time.Millisecond
	on := newStoreClock(t, testDB.pool, cfg, clk.Now)
	cfg.ScavengeInterval = -1
	off := newStoreClock(t, testDB.pool, cfg, clk.Now)
	for range 4 {
		login(t, on, map[any]any{"n": 1})
		login(t, off, map[any]any{"n": 1})
	}
	clk.Advance(pgsession.DefaultMaxIdle + time.Second)
	waitFor(t, "the scavenger to empty the cache", func() bool { return on.Stats().Entries == 0 })
	runs := pgsession.ScavengeRuns(on)
	waitFor(t, "three more passes", func() bool { return pgsession.ScavengeRuns(on) >= runs+3 })
	if st := off.Stats(); st.Entries != 4 || st.Scavenged != 0 || pgsession.ScavengeRuns(off) != 0 {
		t.Fatalf("with the scavenger disabled: %+v, %d runs", st, pgsession.ScavengeRuns(off))
	}
}

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

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
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

// statementCounter counts the statements a pool runs that contain a string.
type statementCounter struct {
	match string
	n     atomic.Int64
	hold  chan struct{} // if not nil, matching statements wait for it to close
	held  chan struct{} // closed when the first matching statement waits
	once  sync.Once
}

func (c *statementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if strings.Contains(d.SQL, c.match) {
		c.n.Add(1)
		if c.hold != nil {
			c.once.Do(func() { close(c.held) })
			<-c.hold
		}
	}
	return ctx
}

func (c *statementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func tracedPool(t testing.TB, tracer pgx.QueryTracer) *pgxpool.Pool {
	t.Helper()
	pcfg, err := pgxpool.ParseConfig(testDB.url)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.ConnConfig.Tracer = tracer
	return newPoolConfig(t, pcfg)
}

func TestPurgeRemovesExactlyTheExpiredInBatches(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.PurgeInterval = -1
	counter := &statementCounter{match: "SKIP LOCKED"}
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
	hold := &statementCounter{match: "SKIP LOCKED", hold: make(chan struct{}), held: make(chan struct{})}
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

func TestRegenerate(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	a, b := twoStores(t, cfg)
	sess, oldCookie := login(t, a, map[any]any{"user": "ada"})
	oldID := sess.ID
	get(t, b, oldCookie) // cached on b

	w := httptest.NewRecorder()
	if err := a.Regenerate(request(oldCookie), w, sess); err != nil {
		t.Fatal(err)
	}
	newCookie := responseCookie(t, w)
	if newCookie == nil || sess.ID == oldID || sess.ID == "" {
		t.Fatalf("after Regenerate: cookie %v, ID %q (was %q)", newCookie, sess.ID, oldID)
	}
	waitFor(t, "b to drop the old session", func() bool {
		_, ok := pgsession.Cached(b, oldID)
		return !ok
	})
	for name, st := range map[string]*pgsession.Store{"a": a, "b": b} {
		if got := get(t, st, oldCookie); !got.IsNew {
			t.Fatalf("%s still serves the old token", name)
		}
		if got := get(t, st, newCookie); got.IsNew || got.Values["user"] != "ada" {
			t.Fatalf("%s: the new cookie does not carry the values: %v", name, got.Values)
		}
	}
	if rows := liveRows(t, cfg.Table); rows != 1 {
		t.Fatalf("%d live rows after Regenerate, want 1", rows)
	}
}

func TestLenDeleteClear(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	a, b := twoStores(t, cfg)
	ctx := context.Background()
	var ids []string
	var cookies []*http.Cookie
	for i := range 5 {
		sess, c := login(t, a, map[any]any{"n": i})
		ids, cookies = append(ids, sess.ID), append(cookies, c)
		get(t, b, c)
	}
	insertExpired(t, cfg.Table, 2)
	if n, err := a.Len(ctx); err != nil || n != 5 {
		t.Fatalf("Len = %d, %v; want 5 (expired rows do not count)", n, err)
	}

	if err := a.Delete(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if n, _ := b.Len(ctx); n != 4 {
		t.Fatalf("Len after Delete = %d, want 4", n)
	}
	waitFor(t, "b to drop the deleted session", func() bool {
		_, ok := pgsession.Cached(b, ids[0])
		return !ok
	})
	if got := get(t, b, cookies[0]); !got.IsNew {
		t.Fatal("b serves a deleted session")
	}
	if err := a.Delete(ctx, ids[0]); err != nil {
		t.Fatalf("deleting a deleted session: %v", err)
	}
	if err := a.Delete(ctx, "not-a-token"); !errors.Is(err, pgsession.ErrInvalidID) {
		t.Fatalf("Delete of a bad token: %v, want ErrInvalidID", err)
	}

	drops := b.Stats().CacheDrops
	if err := a.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := a.Len(ctx); n != 0 {
		t.Fatalf("Len after Clear = %d", n)
	}
	waitFor(t, "b to drop its cache", func() bool { return b.Stats().CacheDrops > drops })
	for i, c := range cookies {
		if got := get(t, b, c); !got.IsNew {
			t.Fatalf("b serves session %d after Clear", i)
		}
		if got := get(t, a, c); !got.IsNew {
			t.Fatalf("a serves session %d after Clear", i)
		}
	}
}
