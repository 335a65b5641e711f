package pgsession_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgsession/pgsession"
)

// errTracer records the errors of statements containing match.
type errTracer struct {
	match string
	mu    sync.Mutex
	errs  []error
}

type errKey struct{}

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

// Regression tests for defects a second reader found, each with the
// interleaving that exposed it.

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

// Regenerate of a session logged out meanwhile must not revive its values
// under a new token.
func TestRegenerateAfterLogoutIsRefused(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := newStore(t, testDB.pool, cfg)
	_, c := login(t, s, map[any]any{"user": "ada"})
	sess := get(t, s, c)
	if err := s.Delete(context.Background(), sess.ID); err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	if err := s.Regenerate(request(c), w, sess); !errors.Is(err, pgsession.ErrDeleted) {
		t.Fatalf("Regenerate after logout: %v, want ErrDeleted", err)
	}
	if responseCookie(t, w) != nil {
		t.Fatal("the refused Regenerate set a cookie")
	}
	if n, _ := s.Len(context.Background()); n != 0 {
		t.Fatalf("Len = %d: the values live on under a new token", n)
	}
}

// An unchanged Save that shortens MaxAge must shorten the row's expiry.
func TestUnchangedSaveWithShorterMaxAgeWrites(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := newStore(t, testDB.pool, cfg)
	_, c := login(t, s, map[any]any{"user": "ada"})
	sess := get(t, s, c)
	sess.Options.MaxAge = 3600
	save(t, s, sess)
	var left time.Duration
	err := testDB.pool.QueryRow(context.Background(),
		`SELECT (extract(epoch FROM expires_at - now()) * 1e6)::bigint * 1000 FROM `+pgx.Identifier{cfg.Table}.Sanitize()).Scan(&left)
	if err != nil {
		t.Fatal(err)
	}
	if left > time.Hour || left < 59*time.Minute {
		t.Fatalf("Save with MaxAge 1h left the row alive for another %v", left.Round(time.Minute))
	}
	if st := s.Stats(); st.SavesSkipped != 0 || st.Saves != 2 {
		t.Fatalf("stats %+v: want a full write, so other instances hear of it", st)
	}
}

// Clear must be as final as a logout: a request that loaded a session
// before it cannot save it back.
func TestClearIsNotUndoneByARequestUnderWay(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := newStore(t, testDB.pool, cfg)
	_, c := login(t, s, map[any]any{"user": "ada"})
	slow := get(t, s, c)
	if err := s.Clear(context.Background()); err != nil {
		t.Fatal(err)
	}
	slow.Values["n"] = 1
	if err := s.Save(request(c), httptest.NewRecorder(), slow); !errors.Is(err, pgsession.ErrDeleted) {
		t.Fatalf("Save after Clear: %v, want ErrDeleted", err)
	}
	if n, _ := s.Len(context.Background()); n != 0 {
		t.Fatalf("Len = %d after Clear", n)
	}
}
