package bench

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/sessions"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgsession/pgsession"
)

// envDatabaseURL names the database the suite uses, when set.
const envDatabaseURL = "PGSESSION_TEST_DATABASE_URL"

// localDatabaseURL is used when envDatabaseURL is not set.
const localDatabaseURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// sessionName is the cookie and session name every store uses.
const sessionName = "bench"

// hashKey is the one securecookie hash key of every store (64 bytes; no
// block key anywhere), so that all of them sign cookies the same way.
var hashKey = []byte("pgsession-bench:hash-key:0123456789abcdef0123456789abcdef:!?#%&*+")

// The session every benchmark stores: an int, two short strings and a
// 256-byte string.
const (
	keyCounter = "counter"
	keyUser    = "user"
	keyRole    = "role"
	keyPrefs   = "prefs"
)

var prefs = strings.Repeat("0123456789abcdef", 16) // 256 bytes

func sessionValues() map[any]any {
	return map[any]any{
		keyCounter: 1,
		keyUser:    "alice",
		keyRole:    "admin",
		keyPrefs:   prefs,
	}
}

// checkValues reads every value of a loaded session, as a handler would.
func checkValues(v map[any]any) error {
	if _, ok := v[keyCounter].(int); !ok {
		return fmt.Errorf("%s is %T, want int", keyCounter, v[keyCounter])
	}
	if s, _ := v[keyUser].(string); s != "alice" {
		return fmt.Errorf("%s is %#v", keyUser, v[keyUser])
	}
	if s, _ := v[keyRole].(string); s != "admin" {
		return fmt.Errorf("%s is %#v", keyRole, v[keyRole])
	}
	if s, _ := v[keyPrefs].(string); len(s) != len(prefs) {
		return fmt.Errorf("%s has %d bytes, want %d", keyPrefs, len(s), len(prefs))
	}
	return nil
}

// database is the pool every store of the process shares, opened on first
// use and closed by TestMain.
var database struct {
	once sync.Once
	pool *pgxpool.Pool
	err  error
}

func databaseURL() string {
	if u := os.Getenv(envDatabaseURL); u != "" {
		return u
	}
	return localDatabaseURL
}

// redacted returns a connection string without its password.
func redacted(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable connection string)"
	}
	return u.Redacted()
}

// dbPool returns the shared pool, or fails tb when no database answers.
func dbPool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	database.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		pool, err := pgxpool.New(context.Background(), databaseURL())
		if err == nil {
			if err = pool.Ping(ctx); err != nil {
				pool.Close()
			}
		}
		if err != nil {
			database.err = err
			return
		}
		database.pool = pool
	})
	if database.err != nil {
		tb.Fatalf("the pgsession benchmarks need PostgreSQL, and none answers at %s: %v\n"+
			"Set %s=postgres://user@host:port/db (a database the suite may create and drop tables in), or start a server at %s.",
			redacted(databaseURL()), database.err, envDatabaseURL, localDatabaseURL)
	}
	return database.pool
}

func closeDB() {
	if database.pool != nil {
		database.pool.Close()
	}
}

var tableSeq atomic.Int64

// newTable returns a table name no other benchmark of any run uses, and
// drops that table when tb ends.
func newTable(tb testing.TB, pool *pgxpool.Pool, tag string) string {
	tb.Helper()
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	name := fmt.Sprintf("pgsbench_%x_%d_%s", rnd, tableSeq.Add(1), tag)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{name}.Sanitize()); err != nil {
			tb.Errorf("drop table %s: %v", name, err)
		}
	})
	return name
}

// storeKind is one row of every benchmark.
type storeKind struct {
	name string
	open func(testing.TB) *fixture
}

var storeKinds = []storeKind{
	{"pgsession-cache", func(tb testing.TB) *fixture { return openPgsession(tb, "cache", 0) }},
	{"pgsession-nocache", func(tb testing.TB) *fixture { return openPgsession(tb, "nocache", -1) }},
	{"cookie", openCookie},
	{"filesystem", openFilesystem},
	{"raw-pgx", openRaw},
}

// fixture is an open store of one kind. Exactly one of store and raw is set.
type fixture struct {
	store sessions.Store
	pg    *pgsession.Store // the store, when it is a pgsession.Store
	raw   *rawStore
}

func openPgsession(tb testing.TB, tag string, cacheSize int) *fixture {
	tb.Helper()
	pool := dbPool(tb)
	table := newTable(tb, pool, "pgsession_"+tag)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := pgsession.New(ctx, pool, pgsession.Config{
		KeyPairs:  [][]byte{hashKey},
		Table:     table,
		CacheSize: cacheSize,
	})
	if err != nil {
		tb.Fatalf("pgsession.New: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return &fixture{store: s, pg: s}
}

func openCookie(tb testing.TB) *fixture {
	return &fixture{store: sessions.NewCookieStore(hashKey)}
}

func openFilesystem(tb testing.TB) *fixture {
	return &fixture{store: sessions.NewFilesystemStore(tb.TempDir(), hashKey)}
}

// rawStore is the floor: the session row read and written with one pgx
// statement each, on a table like pgsession's (same columns, same index),
// with no cookie, no HTTP request and no encoding.
type rawStore struct {
	pool   *pgxpool.Pool
	load   string
	upsert string
}

func openRaw(tb testing.TB) *fixture {
	tb.Helper()
	pool := dbPool(tb)
	name := newTable(tb, pool, "raw")
	t := pgx.Identifier{name}.Sanitize()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := pool.Exec(ctx, `CREATE TABLE `+t+` (
		key_hash   bytea       PRIMARY KEY,
		data       bytea       NOT NULL,
		version    bigint      NOT NULL DEFAULT 1,
		expires_at timestamptz NOT NULL,
		created_at timestamptz NOT NULL DEFAULT now(),
		updated_at timestamptz NOT NULL DEFAULT now()
	)`)
	if err == nil {
		_, err = pool.Exec(ctx, `CREATE INDEX ON `+t+` (expires_at)`)
	}
	if err != nil {
		tb.Fatalf("create table %s: %v", name, err)
	}
	return &fixture{raw: &rawStore{
		pool: pool,
		load: `SELECT data FROM ` + t + ` WHERE key_hash = $1`,
		upsert: `INSERT INTO ` + t + ` (key_hash, data, expires_at)
			VALUES ($1, $2, now() + interval '30 days')
			ON CONFLICT (key_hash) DO UPDATE
			SET data = excluded.data, expires_at = excluded.expires_at`,
	}}
}

// client is one browser with one session in the store: for the gorilla
// stores the request that carries its cookie, for raw-pgx its row.
type client struct {
	f   *fixture
	req *http.Request              // template; every operation uses a copy
	rec *httptest.ResponseRecorder // reused, its headers cleared per Save
	n   int                        // the counter's last saved value

	key  []byte // raw-pgx: the row's primary key
	data []byte // raw-pgx: the row's data
}

// newClient creates a session with the standard values and saves it.
func (f *fixture) newClient(tb testing.TB) *client {
	tb.Helper()
	c := &client{f: f, rec: httptest.NewRecorder(), n: 1}
	if f.raw != nil {
		tok := make([]byte, 32)
		_, _ = rand.Read(tok)
		k := sha256.Sum256(tok)
		c.key = k[:]
		// The payload pgsession stores for the same values.
		data, err := pgsession.DefaultSerializer{}.Serialize(sessionValues())
		if err != nil {
			tb.Fatal(err)
		}
		c.data = data
		if err := c.rawUpsert(); err != nil {
			tb.Fatal(err)
		}
		return c
	}
	r := httptest.NewRequest(http.MethodGet, "http://example.com/", nil)
	s, err := f.store.Get(r, sessionName)
	if err != nil {
		tb.Fatalf("get a new session: %v", err)
	}
	for k, v := range sessionValues() {
		s.Values[k] = v
	}
	w := httptest.NewRecorder()
	if err := f.store.Save(r, w, s); err != nil {
		tb.Fatalf("save a new session: %v", err)
	}
	cookies := w.Result().Cookies()
	if len(cookies) != 1 || cookies[0].Name != sessionName {
		tb.Fatalf("save a new session: got cookies %v, want one named %q", cookies, sessionName)
	}
	c.req = httptest.NewRequest(http.MethodGet, "http://example.com/", nil)
	c.req.AddCookie(&http.Cookie{Name: sessionName, Value: cookies[0].Value})
	return c
}

// request returns a fresh request carrying the client's cookie: gorilla's
// registry caches sessions per request, so every operation needs its own.
// A shallow copy is enough (the registry replaces the copy's context) and
// costs the same for every store.
func (c *client) request() *http.Request {
	r := new(http.Request)
	*r = *c.req
	return r
}

// load runs the full gorilla read path and reads the values.
func (c *client) load() (*http.Request, *sessions.Session, error) {
	r := c.request()
	s, err := c.f.store.Get(r, sessionName)
	if err != nil {
		return nil, nil, fmt.Errorf("get: %w", err)
	}
	if s.IsNew {
		return nil, nil, errors.New("get: the store returned a new session, not the stored one")
	}
	if err := checkValues(s.Values); err != nil {
		return nil, nil, fmt.Errorf("get: %w", err)
	}
	return r, s, nil
}

// get is the Get operation.
func (c *client) get() error {
	if c.f.raw != nil {
		return c.rawLoad()
	}
	_, _, err := c.load()
	return err
}

// saveChanged is Get, a new counter value, Save.
func (c *client) saveChanged() error {
	c.n++
	if c.f.raw != nil {
		binary.LittleEndian.PutUint64(c.data[len(c.data)-8:], uint64(c.n))
		return c.rawUpsert()
	}
	r, s, err := c.load()
	if err != nil {
		return err
	}
	s.Values[keyCounter] = c.n
	return c.save(r, s)
}

// saveUnchanged is Get, then Save of the same values.
func (c *client) saveUnchanged() error {
	if c.f.raw != nil {
		return c.rawUpsert()
	}
	r, s, err := c.load()
	if err != nil {
		return err
	}
	return c.save(r, s)
}

func (c *client) save(r *http.Request, s *sessions.Session) error {
	h := c.rec.Header()
	clear(h)
	if err := c.f.store.Save(r, c.rec, s); err != nil {
		return fmt.Errorf("save: %w", err)
	}
	if len(h["Set-Cookie"]) != 1 {
		return fmt.Errorf("save: set %d cookies, want 1", len(h["Set-Cookie"]))
	}
	return nil
}

// cookie returns the cookie the last Save set.
func (c *client) cookie() (string, error) {
	for _, ck := range (&http.Response{Header: c.rec.Header()}).Cookies() {
		if ck.Name == sessionName {
			return ck.Value, nil
		}
	}
	return "", errors.New("no session cookie set")
}

func (c *client) rawLoad() error {
	var data []byte
	if err := c.f.raw.pool.QueryRow(context.Background(), c.f.raw.load, c.key).Scan(&data); err != nil {
		return fmt.Errorf("raw select: %w", err)
	}
	if len(data) != len(c.data) {
		return fmt.Errorf("raw select: %d bytes, want %d", len(data), len(c.data))
	}
	return nil
}

func (c *client) rawUpsert() error {
	if _, err := c.f.raw.pool.Exec(context.Background(), c.f.raw.upsert, c.key, c.data); err != nil {
		return fmt.Errorf("raw upsert: %w", err)
	}
	return nil
}

// rawData returns what the client's row holds now.
func (c *client) rawData() ([]byte, error) {
	var data []byte
	err := c.f.raw.pool.QueryRow(context.Background(), c.f.raw.load, c.key).Scan(&data)
	return data, err
}
