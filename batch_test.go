package pgsession_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/gorilla/sessions"
	"github.com/jackc/pgx/v5"

	"github.com/pgsession/pgsession"
)

// heldStore returns a store whose first write statement is held until
// release is called, so that the writes that follow queue up behind it
// and go as one batch. batches counts the multi-row statements.
func heldStore(t *testing.T, cfg pgsession.Config) (s *pgsession.Store, held <-chan struct{}, release func(), batches *statementCounter) {
	t.Helper()
	hold := &statementCounter{match: "INSERT INTO", hold: make(chan struct{}), held: make(chan struct{})}
	batches = &statementCounter{match: "unnest("}
	s = newStore(t, tracedPool(t, multiTracer{hold, batches}), cfg)
	var once sync.Once
	return s, hold.held, func() { once.Do(func() { close(hold.hold) }) }, batches
}

type multiTracer []pgx.QueryTracer

func (m multiTracer) TraceQueryStart(ctx context.Context, c *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	for _, t := range m {
		ctx = t.TraceQueryStart(ctx, c, d)
	}
	return ctx
}

func (m multiTracer) TraceQueryEnd(ctx context.Context, c *pgx.Conn, d pgx.TraceQueryEndData) {
	for _, t := range m {
		t.TraceQueryEnd(ctx, c, d)
	}
}

// saveAsync saves sess in a goroutine and reports the outcome on the
// returned channel.
type saveResult struct {
	cookie *http.Cookie
	err    error
}

func saveAsync(s *pgsession.Store, sess *sessions.Session) <-chan saveResult {
	ch := make(chan saveResult, 1)
	go func() {
		w := httptest.NewRecorder()
		err := s.Save(request(nil), w, sess)
		var c *http.Cookie
		for _, ck := range w.Result().Cookies() {
			if ck.Name == cookieName {
				c = ck
			}
		}
		ch <- saveResult{c, err}
	}()
	return ch
}

// waitQueued waits until n writes wait behind the held one.
func waitQueued(t *testing.T, s *pgsession.Store, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d writes to queue", n), func() bool { return pgsession.QueuedWrites(s) == n })
}

func TestConcurrentSavesOfManySessionsGoAsOneBatch(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s, held, release, batches := heldStore(t, cfg)
	defer release()

	const n = 20
	first := saveAsync(s, newSession(s, "first"))
	<-held
	var results []<-chan saveResult
	for i := range n {
		results = append(results, saveAsync(s, newSession(s, fmt.Sprint(i))))
	}
	waitQueued(t, s, n)
	release()
	if r := <-first; r.err != nil {
		t.Fatal(r.err)
	}
	other := newStore(t, testDB.pool, cfg)
	for i, rc := range results {
		r := <-rc
		if r.err != nil || r.cookie == nil {
			t.Fatalf("save %d: %v", i, r.err)
		}
		if got := get(t, other, r.cookie); got.Values["v"] != fmt.Sprint(i) {
			t.Fatalf("save %d: a second store reads %v", i, got.Values)
		}
	}
	if got := batches.n.Load(); got != 1 {
		t.Fatalf("%d multi-row statements, want 1", got)
	}
	if st := s.Stats(); st.Batches != 1 || st.BatchedWrites != n || st.Saves != n+1 || st.BatchRetries != 0 {
		t.Fatalf("stats %+v", st)
	}
	if rows := countRows(t, cfg.Table); rows != n+1 {
		t.Fatalf("%d rows, want %d", rows, n+1)
	}
}

// newSession returns a new session of s with Values["v"] = v.
func newSession(s *pgsession.Store, v string) *sessions.Session {
	sess, _ := s.New(request(nil), cookieName)
	sess.Values["v"] = v
	return sess
}

func TestConcurrentSavesOfOneSessionInOneBatch(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	base, _ := login(t, newStore(t, testDB.pool, cfg), map[any]any{"v": "base"}) // version 1
	s, held, release, batches := heldStore(t, cfg)
	defer release()
	blocker := saveAsync(s, newSession(s, "blocker"))
	<-held

	const n = 8
	results := make([]<-chan saveResult, n)
	for i := range n { // queued one by one, so the last is known
		sess := sessions.NewSession(s, cookieName)
		sess.ID, sess.Options = base.ID, &sessions.Options{Path: "/", MaxAge: 3600}
		sess.Values["v"] = fmt.Sprint(i)
		results[i] = saveAsync(s, sess)
		waitQueued(t, s, i+1)
	}
	release()
	if r := <-blocker; r.err != nil {
		t.Fatal(r.err)
	}
	var cookies []*http.Cookie
	for i, rc := range results {
		r := <-rc
		if r.err != nil || r.cookie == nil {
			t.Fatalf("save %d of the same session: %v", i, r.err)
		}
		cookies = append(cookies, r.cookie)
	}
	// The later write won, once: the login's version 1, plus one.
	if _, version := rowVersion(t, cfg.Table, base.ID); version != 2 {
		t.Fatalf("version %d after one batch of %d writes of one session, want 2", version, n)
	}
	if st := s.Stats(); st.Batches != 1 || st.BatchedWrites != n || batches.n.Load() != 0 {
		t.Fatalf("stats %+v, %d multi-row statements: want one batch of %d writes of one row", st, batches.n.Load(), n)
	}
	cold := newStore(t, testDB.pool, cfg)
	want := fmt.Sprint(n - 1)
	for i, c := range cookies {
		if got := get(t, cold, c); got.Values["v"] != want {
			t.Fatalf("caller %d reads %v, want the last write %q", i, got.Values, want)
		}
	}
	if v, ok := pgsession.Cached(s, base.ID); !ok || v != 2 {
		t.Fatalf("cached version %d (cached %v), want 2", v, ok)
	}
	if got := get(t, s, cookies[0]); got.Values["v"] != want {
		t.Fatalf("the batching store reads %v, want %q", got.Values, want)
	}
}

// rowVersion returns the data and version of the row of session id.
func rowVersion(t testing.TB, table, id string) ([]byte, int64) {
	t.Helper()
	var data []byte
	var v int64
	err := testDB.pool.QueryRow(context.Background(),
		"SELECT data, version FROM "+pgx.Identifier{table}.Sanitize()+" WHERE key_hash = sha256(decode($1, 'base64'))",
		base64Std(id)).Scan(&data, &v)
	if err != nil {
		t.Fatal(err)
	}
	return data, v
}

// base64Std turns a base64url token into standard, padded base64 for SQL.
func base64Std(id string) string {
	s := strings.NewReplacer("-", "+", "_", "/").Replace(id)
	for len(s)%4 != 0 {
		s += "="
	}
	return s
}

func TestOneBadWriteFailsOnlyItsOwnSave(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s, held, release, batches := heldStore(t, cfg)
	defer release()
	if _, err := testDB.pool.Exec(context.Background(), "ALTER TABLE "+pgx.Identifier{cfg.Table}.Sanitize()+
		" ADD CONSTRAINT small CHECK (octet_length(data) < 600)"); err != nil {
		t.Fatal(err)
	}
	blocker := saveAsync(s, newSession(s, "blocker"))
	<-held
	good := make([]<-chan saveResult, 4)
	for i := range good {
		good[i] = saveAsync(s, newSession(s, fmt.Sprint(i)))
	}
	bad := saveAsync(s, newSession(s, strings.Repeat("x", 1000)))
	waitQueued(t, s, len(good)+1)
	release()
	if r := <-blocker; r.err != nil {
		t.Fatal(r.err)
	}
	if r := <-bad; r.err == nil || r.cookie != nil {
		t.Fatalf("the bad write: err %v, cookie %v; want an error and no cookie", r.err, r.cookie)
	}
	for i, rc := range good {
		if r := <-rc; r.err != nil {
			t.Fatalf("good write %d failed with the bad one: %v", i, r.err)
		}
	}
	if batches.n.Load() != 1 || countRows(t, cfg.Table) != len(good)+1 || s.Stats().BatchRetries != 1 {
		t.Fatalf("%d batch statements, %d rows, %+v", batches.n.Load(), countRows(t, cfg.Table), s.Stats())
	}
}

func TestMaxBatchOneDisablesBatching(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.MaxBatch = 1
	s, held, release, batches := heldStore(t, cfg)
	defer release()
	first := saveAsync(s, newSession(s, "first"))
	<-held
	second := saveAsync(s, newSession(s, "second"))
	release()
	for _, rc := range []<-chan saveResult{first, second} {
		if r := <-rc; r.err != nil {
			t.Fatal(r.err)
		}
	}
	if batches.n.Load() != 0 || s.Stats().Batches != 0 {
		t.Fatal("MaxBatch 1 batched")
	}
}

func TestCloseDuringABurstLosesNothing(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s, err := pgsession.New(context.Background(), newPool(t, testDB.url), cfg)
	if err != nil {
		t.Fatal(err)
	}
	const writers = 16
	type state struct {
		cookie *http.Cookie
		acked  int
	}
	states := make([]*state, writers)
	var wg sync.WaitGroup
	started := make(chan struct{}, writers)
	for i := range states {
		st := &state{}
		states[i] = st
		wg.Add(1)
		go func() {
			defer wg.Done()
			sess := newSession(s, "0")
			for n := 1; ; n++ {
				sess.Values["n"] = n
				w := httptest.NewRecorder()
				err := s.Save(request(nil), w, sess)
				if errors.Is(err, pgsession.ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("save: %v", err)
					return
				}
				st.acked, st.cookie = n, responseCookie(t, w)
				if n == 3 {
					started <- struct{}{}
				}
			}
		}()
	}
	for range writers {
		<-started
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	cold := newStore(t, testDB.pool, cfg)
	for i, st := range states {
		if got := get(t, cold, st.cookie).Values["n"]; got != st.acked {
			t.Fatalf("writer %d: stored n=%v, last acknowledged %d", i, got, st.acked)
		}
	}
}

func TestBatchRefusesALoggedOutSessionOnly(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	plain := newStore(t, testDB.pool, cfg)
	gone, c := login(t, plain, map[any]any{"v": "gone"})
	logout(t, plain, c)

	s, held, release, batches := heldStore(t, cfg)
	defer release()
	blocker := saveAsync(s, newSession(s, "blocker"))
	<-held
	good := make([]<-chan saveResult, 3)
	for i := range good {
		good[i] = saveAsync(s, newSession(s, fmt.Sprint(i)))
	}
	gone.Values["v"] = "back from the dead"
	stale := saveAsync(s, gone)
	waitQueued(t, s, len(good)+1)
	release()
	if r := <-blocker; r.err != nil {
		t.Fatal(r.err)
	}
	if r := <-stale; !errors.Is(r.err, pgsession.ErrDeleted) || r.cookie != nil {
		t.Fatalf("save of a logged-out session in a batch: %v, cookie %v; want ErrDeleted and no cookie", r.err, r.cookie)
	}
	for i, rc := range good {
		if r := <-rc; r.err != nil {
			t.Fatalf("good write %d: %v", i, r.err)
		}
	}
	if batches.n.Load() != 1 || liveRows(t, cfg.Table) != len(good)+1 || s.Stats().BatchRetries != 0 {
		t.Fatalf("%d batch statements, %d live rows, %+v", batches.n.Load(), liveRows(t, cfg.Table), s.Stats())
	}
}

// errTracer records the errors of statements containing match.
type errTracer struct {
	match string
	mu    sync.Mutex
	errs  []error
}

type errKey struct{}

// The multi-row batch statement must run, not fail into the write-by-write
// fallback (which hid a syntax error once).
func TestBatchStatementSucceeds(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	hold := &statementCounter{match: "INSERT INTO", hold: make(chan struct{}), held: make(chan struct{})}
	et := &errTracer{match: "unnest("}
	s := newStore(t, tracedPool(t, multiTracer{hold, et}), cfg)
	first := saveAsync(s, newSession(s, "first"))
	<-hold.held
	a, b := saveAsync(s, newSession(s, "a")), saveAsync(s, newSession(s, "b"))
	waitQueued(t, s, 2)
	close(hold.hold)
	for _, ch := range []<-chan saveResult{first, a, b} {
		if r := <-ch; r.err != nil {
			t.Fatal(r.err)
		}
	}
	et.mu.Lock()
	defer et.mu.Unlock()
	if len(et.errs) > 0 {
		t.Fatalf("batch statement failed: %v", et.errs[0])
	}
}

// A logout and a stale save of the same session queued in one batch: the
// save must not supersede the delete.
func TestBatchedLogoutThenStaleSaveKeepsLogout(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	other := newStore(t, testDB.pool, cfg)
	_, c := login(t, other, map[any]any{"user": "ada"})

	hold := &statementCounter{match: "INSERT INTO", hold: make(chan struct{}), held: make(chan struct{})}
	s := newStore(t, tracedPool(t, hold), cfg)
	stale := get(t, s, c) // a request that loaded the session before the logout
	blocker := saveAsync(s, newSession(s, "blocker"))
	<-hold.held

	delDone := make(chan error, 1)
	go func() { delDone <- s.Delete(context.Background(), stale.ID) }()
	waitQueued(t, s, 1)
	stale.Values["user"] = "ada-again"
	saved := saveAsync(s, stale)
	waitQueued(t, s, 2)
	close(hold.hold)
	<-blocker
	if err := <-delDone; err != nil {
		t.Fatalf("Delete: %v", err)
	}
	r := <-saved
	if !errors.Is(r.err, pgsession.ErrDeleted) {
		t.Errorf("save queued after the logout: err %v, want ErrDeleted", r.err)
	}
	fresh := newStore(t, testDB.pool, cfg)
	if got := get(t, fresh, c); !got.IsNew {
		t.Fatalf("logout lost: session still alive with %v", got.Values)
	}
}

func (e *errTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	return context.WithValue(ctx, errKey{}, strings.Contains(d.SQL, e.match))
}

func (e *errTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryEndData) {
	if m, _ := ctx.Value(errKey{}).(bool); m && d.Err != nil {
		e.mu.Lock()
		e.errs = append(e.errs, d.Err)
		e.mu.Unlock()
	}
}
