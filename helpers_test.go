package pgsession_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/sessions"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgsession/pgsession"
)

var (
	hashKey  = []byte("0123456789abcdef0123456789abcdef") // 32 bytes
	blockKey = []byte("fedcba9876543210fedcba9876543210") // 32 bytes
)

const cookieName = "sid"

// tableName returns a table name of the test's own, so tests can run in
// parallel.
func tableName(t testing.TB) string {
	clean := regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(clean) > 40 {
		clean = clean[:40]
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "t_" + clean + "_" + hex.EncodeToString(b[:])
}

// newPool returns a pool of the test's own, closed at cleanup. Like
// newPoolConfig and testConfig, it fails the test at once when the tests
// found no PostgreSQL.
func newPool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	requireDB(t)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	return newPoolConfig(t, cfg)
}

func newPoolConfig(t testing.TB, cfg *pgxpool.Config) *pgxpool.Pool {
	t.Helper()
	requireDB(t)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// testConfig returns a Config on a fresh table of the test's own, dropped
// at cleanup. It fails the test at once when the tests found no
// PostgreSQL.
func testConfig(t testing.TB) pgsession.Config {
	t.Helper()
	requireDB(t)
	table := tableName(t)
	t.Cleanup(func() {
		// The trigger function outlives its table: drop it too, so the
		// test database does not collect one per test run.
		_, err := testDB.pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+pgx.Identifier{table}.Sanitize()+
			"; DROP FUNCTION IF EXISTS "+pgsession.NotifyFunction(table)+"()")
		if err != nil {
			t.Errorf("drop test table: %v", err)
		}
	})
	return pgsession.Config{KeyPairs: [][]byte{hashKey, blockKey}, Table: table}
}

// newStore opens a Store on pool with cfg, closed at cleanup.
func newStore(t testing.TB, pool *pgxpool.Pool, cfg pgsession.Config) *pgsession.Store {
	t.Helper()
	t.Helper()
	s, err := pgsession.New(context.Background(), pool, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	configs.Store(s, cfg)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// request returns a request that carries cookie, if not nil.
func request(cookie *http.Cookie) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	if cookie != nil {
		r.AddCookie(cookie)
	}
	return r
}

// get runs Store.Get as a fresh request carrying cookie.
func get(t testing.TB, s sessions.Store, cookie *http.Cookie) *sessions.Session {
	t.Helper()
	sess, err := s.Get(request(cookie), cookieName)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if sess == nil {
		t.Fatal("Get returned a nil session")
	}
	return sess
}

// save saves sess and returns the cookie it set, or nil.
func save(t testing.TB, s sessions.Store, sess *sessions.Session) *http.Cookie {
	t.Helper()
	w := httptest.NewRecorder()
	if err := s.Save(request(nil), w, sess); err != nil {
		t.Fatalf("Save: %v", err)
	}
	return responseCookie(t, w)
}

// responseCookie returns the session cookie set in w, or nil.
func responseCookie(t testing.TB, w *httptest.ResponseRecorder) *http.Cookie {
	t.Helper()
	for _, c := range w.Result().Cookies() {
		if c.Name == cookieName {
			return c
		}
	}
	return nil
}

// login creates a session with values and returns its cookie.
func login(t testing.TB, s sessions.Store, values map[any]any) (*sessions.Session, *http.Cookie) {
	t.Helper()
	sess := get(t, s, nil)
	for k, v := range values {
		sess.Values[k] = v
	}
	c := save(t, s, sess)
	if c == nil {
		t.Fatal("Save set no cookie")
	}
	return sess, c
}

// logout deletes the session cookie c names through s, as a logout
// handler does (Save with MaxAge < 0).
func logout(t testing.TB, s sessions.Store, c *http.Cookie) {
	t.Helper()
	sess := get(t, s, c)
	sess.Options.MaxAge = -1
	save(t, s, sess)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// goEach runs fn(0) to fn(n-1), each in a goroutine of its own. wait
// returns once all have returned, and fails the test with any error.
func goEach(t testing.TB, n int, fn func(i int) error) (wait func()) {
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- fn(i)
		}()
	}
	return func() {
		t.Helper()
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
}

// clock is a settable clock for Config.Clock.
type clock struct{ t atomicTime }

func newClock() *clock {
	c := &clock{}
	c.t.Store(time.Now())
	return c
}
func (c *clock) Now() time.Time          { return c.t.Load() }
func (c *clock) Advance(d time.Duration) { c.t.Store(c.t.Load().Add(d)) }

// logCounter is a slog.Handler that counts records by level and message.
type logCounter struct {
	mu   sync.Mutex
	msgs []slog.Record
}

func (l *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCounter) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, r)
	return nil
}
func (l *logCounter) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCounter) WithGroup(string) slog.Handler      { return l }

// count returns how many records at level have a message containing sub.
func (l *logCounter) count(level slog.Level, sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.msgs {
		if r.Level == level && strings.Contains(r.Message, sub) {
			n++
		}
	}
	return n
}
