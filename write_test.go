package pgsession_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/sessions"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgsession/pgsession"
)

// lockRow holds a row lock on the session id's row, as an admin's SELECT
// ... FOR UPDATE would, until the returned function is called (or cleanup).
func lockRow(t *testing.T, table, id string) (unlock func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testDB.url)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	err = tx.QueryRow(ctx, "SELECT count(*) FROM (SELECT 1 FROM "+pgx.Identifier{table}.Sanitize()+
		" WHERE key_hash = sha256(decode($1, 'base64')) FOR UPDATE) l", base64Std(id)).Scan(&n)
	if err != nil || n != 1 {
		t.Fatalf("lock the row: %d rows, %v", n, err)
	}
	var once sync.Once
	unlock = func() {
		once.Do(func() {
			_ = tx.Rollback(ctx)
			_ = conn.Close(ctx)
		})
	}
	t.Cleanup(unlock)
	return unlock
}

// saveWithin saves sess under a request context with the given timeout
// (none if 0) and reports how long it took.
func saveWithin(s *pgsession.Store, sess *sessions.Session, timeout time.Duration) (time.Duration, error) {
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	start := time.Now()
	err := s.Save(request(nil).WithContext(ctx), httptest.NewRecorder(), sess)
	return time.Since(start), err
}

// TestLockedRowDelaysOnlyItsOwnSession: a row locked elsewhere delays
// writes of that session only, whatever batch they would have shared.
func TestLockedRowDelaysOnlyItsOwnSession(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := newStore(t, newPool(t, testDB.url), cfg)
	locked, lockedCookie := login(t, s, map[any]any{"n": 0})
	others := make([]*sessions.Session, 3)
	for i := range others {
		others[i], _ = login(t, s, map[any]any{"n": i})
	}
	unlock := lockRow(t, cfg.Table, locked.ID)
	defer unlock()

	type result struct {
		what string
		took time.Duration
		err  error
	}
	results := make(chan result, 10)
	locked.Values["n"] = 1
	go func() {
		took, err := saveWithin(s, locked, time.Second)
		results <- result{"locked", took, err}
	}()
	// Let the locked session's write go first, so the others queue behind
	// it or batch with it.
	waitFor(t, "the locked write to wait", func() bool { return s.Stats().LockWaits == 1 })
	var wg sync.WaitGroup
	for i, o := range others {
		wg.Go(func() {
			o.Values["n"] = 10 + i
			took, err := saveWithin(s, o, 0)
			results <- result{"existing", took, err}
		})
	}
	for range 5 {
		wg.Go(func() {
			took, err := saveWithin(s, newSession(s, "login"), 0)
			results <- result{"new", took, err}
		})
	}
	wg.Wait()
	for range 8 {
		r := <-results
		if r.err != nil || r.took > time.Second {
			t.Errorf("%s session's Save: %v after %v; want success within 1s", r.what, r.err, r.took)
		}
	}
	r := <-results
	if r.err == nil || !errors.Is(r.err, context.DeadlineExceeded) || r.took > 1500*time.Millisecond {
		t.Fatalf("locked session's Save: %v after %v; want a deadline error within 1.5s", r.err, r.took)
	}
	// A write waiting for a locked row retries with SKIP LOCKED and a
	// backoff: every try was refused and wrote nothing. The error says
	// so, or, when a try was in flight at the deadline, that the write
	// may have committed (ErrUncertain): either is true, and nothing was
	// written.
	if !errors.Is(r.err, pgsession.ErrUncertain) && !strings.Contains(r.err.Error(), "nothing written") {
		t.Fatalf("locked session's Save: %v; want \"nothing written\" or ErrUncertain", r.err)
	}
	unlock()
	if got := get(t, newStore(t, testDB.pool, cfg), lockedCookie); got.IsNew || got.Values["n"] != 0 {
		t.Fatalf("the locked session after its failed Save: new %v, values %v; want n 0 stored", got.IsNew, got.Values)
	}
}

// TestDeadlineNeverReportsSuccess: a Save whose request deadline passes
// while its row is locked never returns success, and the cache and cookie
// do not pretend it was written.
func TestDeadlineNeverReportsSuccess(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := newStore(t, newPool(t, testDB.url), cfg)
	sess, c := login(t, s, map[any]any{"n": 0})
	unlock := lockRow(t, cfg.Table, sess.ID)
	sess.Values["n"] = 1
	w := httptest.NewRecorder()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := s.Save(request(c).WithContext(ctx), w, sess)
	took := time.Since(start)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || took > time.Second {
		t.Fatalf("Save under a held lock with a 500ms deadline: %v after %v", err, took)
	}
	if responseCookie(t, w) != nil {
		t.Fatal("a Save that did not succeed set a cookie")
	}
	if _, cached := pgsession.Cached(s, sess.ID); cached {
		t.Fatal("a Save that may not have committed left its session cached")
	}
	unlock()
	// It was sent, and the lock is gone now: whichever version is stored,
	// the client's old cookie reads it.
	if got := get(t, s, c); got.IsNew {
		t.Fatal("the session is gone")
	}
}

// TestQueuedSaveHonoursItsContext: a write waiting in the queue behind a
// commit in flight returns when its request's context ends, and says it
// wrote nothing.
func TestQueuedSaveHonoursItsContext(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s, held, release, _ := heldStore(t, cfg)
	defer release()
	blocker := saveAsync(s, newSession(s, "blocker"))
	<-held
	start := time.Now()
	took, err := saveWithin(s, newSession(s, "queued"), 200*time.Millisecond)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, pgsession.ErrUncertain) {
		t.Fatalf("queued Save: %v; want a deadline error saying nothing was written", err)
	}
	if took > 250*time.Millisecond || time.Since(start) > 300*time.Millisecond {
		t.Fatalf("queued Save returned after %v, its deadline was 200ms", took)
	}
	if n := pgsession.QueuedWrites(s); n != 0 {
		t.Fatalf("%d writes still queued", n)
	}
	release()
	if r := <-blocker; r.err != nil {
		t.Fatal(r.err)
	}
}

// TestCloseIsBoundedByTheWriteTimeout: Close waits for writes under way,
// and a write blocked on a lock with no deadline of its own is bounded by
// Config.WriteTimeout.
func TestCloseIsBoundedByTheWriteTimeout(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.WriteTimeout = time.Second
	s, err := pgsession.New(context.Background(), newPool(t, testDB.url), cfg)
	if err != nil {
		t.Fatal(err)
	}
	sess, _ := login(t, s, map[any]any{"n": 0})
	lockRow(t, cfg.Table, sess.ID)
	sess.Values["n"] = 1
	done := make(chan error, 1)
	go func() {
		_, err := saveWithin(s, sess, 0)
		done <- err
	}()
	waitFor(t, "the Save to wait for the lock", func() bool { return s.Stats().LockWaits == 1 })
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Fatalf("Close took %v with a 1s write timeout", took)
	}
	if err := <-done; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the blocked Save: %v; want the write timeout", err)
	}
}

// TestWriteTimeoutBoundsAServersRequest: a request context that can be
// canceled but has no deadline, as a server's is, still gets the write
// timeout: a Save blocked on a locked row fails with
// context.DeadlineExceeded about the timeout after it began, whether it
// writes the session (its error built from context.Cause) or only
// refreshes its expiry (its error is pgx's, built from ctx.Err()), and
// the request's own context is left alone.
func TestWriteTimeoutBoundsAServersRequest(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		changed bool
	}{{"changed", true}, {"refresh", false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t)
			cfg.WriteTimeout = time.Second
			cfg.RefreshAfter = -1 // an unchanged Save refreshes the expiry
			s := newStore(t, newPool(t, testDB.url), cfg)
			sess, c := login(t, s, map[any]any{"n": 0})
			if !tc.changed {
				sess = get(t, s, c)
			}
			lockRow(t, cfg.Table, sess.ID)
			if tc.changed {
				sess.Values["n"] = 1
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			start := time.Now()
			err := s.Save(request(c).WithContext(ctx), httptest.NewRecorder(), sess)
			took := time.Since(start)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("the blocked Save: %v; want the write timeout", err)
			}
			if took < 900*time.Millisecond || took > 1500*time.Millisecond {
				t.Fatalf("the blocked Save returned after %v with a 1s write timeout", took)
			}
			if ctx.Err() != nil {
				t.Fatal("the write timeout canceled the request's context")
			}
		})
	}
}

// insertUncommitted takes the session id's row away, as an administrator's
// DELETE would, and inserts its key again in a transaction that stays open
// until cleanup.
func insertUncommitted(t *testing.T, table, id string) {
	t.Helper()
	ctx := context.Background()
	tbl := pgx.Identifier{table}.Sanitize()
	if _, err := testDB.pool.Exec(ctx, "DELETE FROM "+tbl+" WHERE key_hash = sha256(decode($1, 'base64'))", base64Std(id)); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, testDB.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(ctx) })
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(ctx) })
	if _, err := tx.Exec(ctx, "INSERT INTO "+tbl+" (key_hash, data, expires_at) VALUES (sha256(decode($1, 'base64')), '\\x', now() + interval '1 hour')",
		base64Std(id)); err != nil {
		t.Fatal(err)
	}
}

// TestUncommittedInsertDelaysOnlyItsOwnSession: a key another transaction
// inserted and has not committed, which FOR UPDATE SKIP LOCKED cannot see,
// delays only that session's Save too: it waits holding no connection
// (here the pool's only one), and at its deadline says it wrote nothing.
func TestUncommittedInsertDelaysOnlyItsOwnSession(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	pool := singleConnPool(t)
	s := newStore(t, pool, cfg)
	sess, _ := login(t, s, map[any]any{"n": 0})
	other, _ := login(t, s, map[any]any{"n": 0})
	insertUncommitted(t, cfg.Table, sess.ID)

	sess.Values["n"] = 1
	type result struct {
		took time.Duration
		err  error
	}
	done := make(chan result, 1)
	go func() {
		took, err := saveWithin(s, sess, time.Second)
		done <- result{took, err}
	}()
	waitFor(t, "the write to wait", func() bool { return s.Stats().LockWaits == 1 })
	other.Values["n"] = 1
	if took, err := saveWithin(s, other, 2*time.Second); err != nil || took > 500*time.Millisecond {
		t.Errorf("other session's Save: %v after %v; want success within 500ms", err, took)
	}
	r := <-done
	if !errors.Is(r.err, context.DeadlineExceeded) || r.took > 1500*time.Millisecond {
		t.Fatalf("Save of the inserted key: %v after %v; want a deadline error within 1.5s", r.err, r.took)
	}
	if errors.Is(r.err, pgsession.ErrUncertain) || !strings.Contains(r.err.Error(), "nothing written") {
		t.Fatalf("Save of the inserted key: %v; every try failed on the lock, so it should say nothing was written", r.err)
	}
	// The lock timeout was the statements' own: the pool's only connection,
	// which ran all of them, has its session's setting back.
	var got, want string
	if err := pool.QueryRow(context.Background(), "SHOW lock_timeout").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if err := testDB.pool.QueryRow(context.Background(), "SHOW lock_timeout").Scan(&want); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("lock_timeout after the writes: %q, want the session's %q", got, want)
	}
}

// TestUncommittedInsertDoesNotStallABatch: a key another transaction
// inserted and has not committed delays only its own session's Save, also
// when that Save is group-committed with others (MaxBatch > 1, the
// default): the batch statement fails on its lock timeout and is retried
// write by write (found by a second reader: the batch used to wait for the
// inserter's commit, and every Save in and behind it with it).
func TestUncommittedInsertDoesNotStallABatch(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.WriteTimeout = 5 * time.Second
	pool := singleConnPool(t)
	s := newStore(t, pool, cfg)
	a, _ := login(t, s, map[any]any{"n": 0})
	b, _ := login(t, s, map[any]any{"n": 0})
	c, _ := login(t, s, map[any]any{"n": 0})
	insertUncommitted(t, cfg.Table, a.ID)

	// Hold the pool's only connection so that c's write keeps the
	// committer busy while a's and b's queue up behind it: they go as one
	// batch once the connection is free.
	held, err := pool.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c.Values["n"] = 1
	cDone := make(chan error, 1)
	go func() { _, err := saveWithin(s, c, 10*time.Second); cDone <- err }()
	waitFor(t, "c's write to be committing", func() bool { return pgsession.CommitBusy(s) })
	a.Values["n"], b.Values["n"] = 1, 1
	aDone := make(chan error, 1)
	go func() { _, err := saveWithin(s, a, 3*time.Second); aDone <- err }()
	type result struct {
		took time.Duration
		err  error
	}
	bDone := make(chan result, 1)
	go func() { took, err := saveWithin(s, b, 3*time.Second); bDone <- result{took, err} }()
	waitFor(t, "a's and b's writes to queue", func() bool { return pgsession.QueuedWrites(s) == 2 })
	held.Release()

	if err := <-cDone; err != nil {
		t.Fatalf("c: %v", err)
	}
	r := <-bDone
	if r.err != nil || r.took > time.Second {
		t.Fatalf("b's Save, batched with the Save of a key another transaction inserted: %v after %v; want success well within 1s", r.err, r.took)
	}
	if err := <-aDone; err == nil {
		t.Fatal("a's Save succeeded while another transaction held its key")
	}
	if st := s.Stats(); st.BatchRetries == 0 {
		t.Fatalf("no batch was retried write by write: %+v", st)
	}
}

// singleConnPool returns a pool of one connection to the test database,
// closed at cleanup: a Save that held it would stall every other.
func singleConnPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pcfg, err := pgxpool.ParseConfig(testDB.url)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.MaxConns = 1
	return newPoolConfig(t, pcfg)
}
