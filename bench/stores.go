package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/alexedwards/scs/pgxstore"
	"github.com/alexedwards/scs/v2"
	"github.com/boj/redistore"
	"github.com/gomodule/redigo/redis"
	"github.com/gorilla/securecookie"
	"github.com/gorilla/sessions"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgsession/pgsession"
)

// sessionName is the cookie and session name every store uses.
const sessionName = "bench"

// hashKey is the one securecookie hash key of every store (64 bytes), so
// that all of them sign cookies the same way. Only the -aes rows add a
// block key: blockKey, 32 bytes (AES-256), encrypting the cookie as well.
var (
	hashKey  = []byte("pgsession-bench:hash-key:0123456789abcdef0123456789abcdef:!?#%&*+")
	blockKey = []byte("pgsession-bench:block:0123456789")
)

// The session every store holds: an int, two short strings and a string
// whose length sets the payload size.
const (
	keyCounter = "counter"
	keyUser    = "user"
	keyRole    = "role"
	keyPrefs   = "prefs"
)

// payload is one session size of the comparison.
type payload struct {
	name  string // as the report names it
	prefs string // the long value
}

var (
	payloadSmall = payload{"300B", strings.Repeat("0123456789abcdef", 16)}        // 256 + the rest: ~300 bytes encoded
	payloadLarge = payload{"4KB", strings.Repeat("0123456789abcdef", 250)[:3990]} // ~4 KB encoded
	payloads     = []payload{payloadSmall, payloadLarge}
)

func (p payload) values() map[any]any {
	return map[any]any{keyCounter: 1, keyUser: "alice", keyRole: "admin", keyPrefs: p.prefs}
}

// encodedSize is the size of the session as pgsession stores it.
func (p payload) encodedSize() int {
	data, err := pgsession.DefaultSerializer{}.Serialize(p.values())
	if err != nil {
		panic(err)
	}
	return len(data)
}

// check reads every value of a loaded session, as a handler would.
func (p payload) check(v map[any]any) error {
	if _, ok := v[keyCounter].(int); !ok {
		return fmt.Errorf("%s is %T, want int", keyCounter, v[keyCounter])
	}
	if s, _ := v[keyUser].(string); s != "alice" {
		return fmt.Errorf("%s is %#v", keyUser, v[keyUser])
	}
	if s, _ := v[keyRole].(string); s != "admin" {
		return fmt.Errorf("%s is %#v", keyRole, v[keyRole])
	}
	if s, _ := v[keyPrefs].(string); len(s) != len(p.prefs) {
		return fmt.Errorf("%s has %d bytes, want %d", keyPrefs, len(s), len(p.prefs))
	}
	return nil
}

// storeKind is one row of the comparison.
type storeKind struct {
	name  string
	about string
	saves bool // only saves: the row has no Get of its own
	open  func(ctx context.Context, e *env, p payload) (*fixture, error)
}

var storeKinds = []storeKind{
	{name: "pgsession-cache", about: "pgsession, default Config: in-process cache on", open: openPgsessionCache},
	{name: "pgsession-cache-aes", about: "the same with a block key: cookies encrypted (AES-256) as well as signed", open: openPgsessionCacheAES},
	{name: "pgsession-nocache", about: "pgsession with `CacheSize: -1`: every Get reads the database", open: openPgsessionNoCache},
	{name: "cookie", about: "gorilla `CookieStore`: the values live in the signed cookie (gob)", open: openCookie},
	{name: "cookie-aes", about: "the same with a block key: cookies encrypted (AES-256) as well as signed", open: openCookieAES},
	{name: "filesystem", about: "gorilla `FilesystemStore` in a temporary directory: a file per session", open: openFilesystem},
	{name: "redistore", about: "boj/redistore on the local Redis (redigo pool of 16)", open: openRedistore},
	{name: "scs-pgxstore", about: "alexedwards/scs v2 with its pgxstore, through `Load` and `Commit` (own pool of 16)", open: openSCS},
	{name: "raw-pgx", about: "floor: `SELECT data` by key; a plain upsert of the row (new data, new expiry), without `pg_notify`", open: openRawPlain},
	{name: "raw-pgx-notify", about: "floor: the same upsert with `pg_notify` in the statement, as pgsession notifies (one LISTENing connection drains it)", saves: true, open: openRawNotify},
}

func kindByName(name string) (storeKind, bool) {
	for _, k := range storeKinds {
		if k.name == name {
			return k, true
		}
	}
	return storeKind{}, false
}

// fixture is an open store of one kind. Exactly one of store, scs and raw
// is set.
type fixture struct {
	kind  string
	p     payload
	store sessions.Store      // a gorilla store
	pg    *pgsession.Store    // the store, when it is a pgsession.Store
	scs   *scs.SessionManager // scs with its pgxstore
	raw   *rawStore
	// The PostgreSQL table that holds the sessions (quoted, as regclass
	// reads it), and the pools that write it; "" for a store elsewhere.
	table  string
	writes []*pgxpool.Pool
	// closers run in reverse order by close.
	closers []func() error
}

func (f *fixture) onClose(fn func() error) { f.closers = append(f.closers, fn) }

// close releases everything the fixture made: stores, tables, files, keys.
func (f *fixture) close() error {
	var errs []error
	for i := len(f.closers) - 1; i >= 0; i-- {
		errs = append(errs, f.closers[i]())
	}
	f.closers = nil
	return errors.Join(errs...)
}

func openPgsessionCache(ctx context.Context, e *env, p payload) (*fixture, error) {
	return openPgsession(ctx, e, p, "pgsession-cache", pgsession.Config{})
}

func openPgsessionCacheAES(ctx context.Context, e *env, p payload) (*fixture, error) {
	return openPgsession(ctx, e, p, "pgsession-cache-aes", pgsession.Config{KeyPairs: [][]byte{hashKey, blockKey}})
}

func openPgsessionNoCache(ctx context.Context, e *env, p payload) (*fixture, error) {
	return openPgsession(ctx, e, p, "pgsession-nocache", pgsession.Config{CacheSize: -1})
}

// openPgsession opens a pgsession.Store with cfg (KeyPairs and, unless
// set, Table filled in) on the shared pool, on a table of its own.
func openPgsession(ctx context.Context, e *env, p payload, kind string, cfg pgsession.Config) (*fixture, error) {
	f := &fixture{kind: kind, p: p}
	s, table, err := newPgsession(ctx, e, e.pool, cfg)
	if err != nil {
		return nil, err
	}
	f.store, f.pg = s, s
	f.table, f.writes = pgx.Identifier{table}.Sanitize(), []*pgxpool.Pool{e.pool}
	f.onClose(func() error { return e.dropTable(table) })
	f.onClose(s.Close)
	return f, nil
}

// newPgsession is pgsession.New on pool with the suite's hash key (unless
// cfg.KeyPairs is set), on a new table unless cfg.Table is set. It returns
// the table's name.
func newPgsession(ctx context.Context, e *env, pool *pgxpool.Pool, cfg pgsession.Config) (*pgsession.Store, string, error) {
	own := cfg.Table == ""
	if own {
		cfg.Table = uniqueName("pgsession")
	}
	if cfg.KeyPairs == nil {
		cfg.KeyPairs = [][]byte{hashKey}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := pgsession.New(ctx, pool, cfg)
	if err != nil {
		if own {
			_ = e.dropTable(cfg.Table)
		}
		return nil, "", fmt.Errorf("pgsession.New: %w", err)
	}
	return s, cfg.Table, nil
}

// maxLength lets the gorilla stores hold the large payload: their default
// limit is 4096 bytes.
const maxLength = 64 << 10

func openCookie(ctx context.Context, e *env, p payload) (*fixture, error) {
	return newCookieFixture(p, "cookie", hashKey)
}

func openCookieAES(ctx context.Context, e *env, p payload) (*fixture, error) {
	return newCookieFixture(p, "cookie-aes", hashKey, blockKey)
}

func newCookieFixture(p payload, kind string, keys ...[]byte) (*fixture, error) {
	s := sessions.NewCookieStore(keys...)
	// Measured all the same, but a browser refuses a cookie over 4096
	// bytes: the report says so for the large payload.
	for _, c := range s.Codecs {
		if sc, ok := c.(*securecookie.SecureCookie); ok {
			sc.MaxLength(maxLength)
		}
	}
	return &fixture{kind: kind, p: p, store: s}, nil
}

func openFilesystem(ctx context.Context, e *env, p payload) (*fixture, error) {
	dir, err := os.MkdirTemp("", "pgsbench-fs-")
	if err != nil {
		return nil, err
	}
	s := sessions.NewFilesystemStore(dir, hashKey)
	s.MaxLength(maxLength)
	f := &fixture{kind: "filesystem", p: p, store: s}
	f.onClose(func() error { return os.RemoveAll(dir) })
	return f, nil
}

func openRedistore(ctx context.Context, e *env, p payload) (*fixture, error) {
	if e.redisAddr == "" {
		return nil, errors.New("redistore: no Redis in this run")
	}
	s, err := redistore.NewRediStore(sharedPoolConns, "tcp", e.redisAddr, "", "", hashKey)
	if err != nil {
		return nil, fmt.Errorf("redistore: %w", err)
	}
	prefix := uniqueName("redistore") + ":"
	s.SetKeyPrefix(prefix)
	s.SetMaxLength(maxLength)
	f := &fixture{kind: "redistore", p: p, store: s}
	f.onClose(s.Close)
	f.onClose(func() error { return deleteRedisKeys(s.Pool, prefix) })
	return f, nil
}

// deleteRedisKeys deletes every key under prefix.
func deleteRedisKeys(pool *redis.Pool, prefix string) error {
	c := pool.Get()
	defer c.Close()
	cursor := 0
	for {
		v, err := redis.Values(c.Do("SCAN", cursor, "MATCH", prefix+"*", "COUNT", 1000))
		if err != nil {
			return err
		}
		if cursor, err = redis.Int(v[0], nil); err != nil {
			return err
		}
		keys, err := redis.Strings(v[1], nil)
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			args := make([]any, len(keys))
			for i, k := range keys {
				args[i] = k
			}
			if _, err := c.Do("DEL", args...); err != nil {
				return err
			}
		}
		if cursor == 0 {
			return nil
		}
	}
}

// openSCS opens scs with its pgxstore. The store's table is always named
// sessions, so it gets a schema of its own, on a pool whose search_path
// points there.
func openSCS(ctx context.Context, e *env, p payload) (*fixture, error) {
	schema := uniqueName("scs")
	sch := pgx.Identifier{schema}.Sanitize()
	if _, err := e.pool.Exec(ctx, `CREATE SCHEMA `+sch+`;
		CREATE TABLE `+sch+`.sessions (token TEXT PRIMARY KEY, data BYTEA NOT NULL, expiry TIMESTAMPTZ NOT NULL);
		CREATE INDEX sessions_expiry_idx ON `+sch+`.sessions (expiry)`); err != nil {
		return nil, fmt.Errorf("scs: create schema: %w", err)
	}
	f := &fixture{kind: "scs-pgxstore", p: p}
	f.onClose(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := e.pool.Exec(ctx, `DROP SCHEMA IF EXISTS `+sch+` CASCADE`)
		return err
	})
	pool, err := e.newPool(ctx, sharedPoolConns, map[string]string{"search_path": schema})
	if err != nil {
		_ = f.close()
		return nil, err
	}
	f.onClose(func() error { pool.Close(); return nil })
	f.table, f.writes = pgx.Identifier{schema, "sessions"}.Sanitize(), []*pgxpool.Pool{pool}
	sm := scs.New()
	sm.Store = pgxstore.NewWithCleanupInterval(pool, 0)
	f.scs = sm
	return f, nil
}

// rawStore is the floor: pgx statements on a table made by pgsession.New,
// with no cookie, no HTTP request and no encoding.
type rawStore struct {
	pool    *pgxpool.Pool
	load    string
	upsert  string
	notify  bool
	channel string
	prefix  string // of the notification payload
}

// rawOrigin names the raw writers in notification payloads.
const rawOrigin = "rawfloor"

// rawStatements returns the floor's statements on table: the SELECT of a
// session's data, and a plain upsert of the row (new data, a new expiry,
// the version bumped), with or without pg_notify (in the same statement,
// as pgsession sends it). It is the least a store that notifies must do,
// not pgsession's own statement, which also bounds its lock waits (a
// lock_timeout of its own transaction) and keeps the stored expiry while
// it is within the refresh lag. The floor sets a new expires_at on every write, and
// that column is indexed, so none of its updates can be HOT.
func rawStatements(table string, notify bool) (load, upsert string) {
	t := pgx.Identifier{table}.Sanitize()
	load = `SELECT data FROM ` + t + ` WHERE key_hash = $1`
	// Marked as pgsession marks its own writes, so that the table's
	// triggers (which notify changes made by plain SQL) stay out of it.
	write := `INSERT INTO ` + t + ` AS s (key_hash, data, expires_at)
		SELECT $1::bytea, $2::bytea, now() + $3::bigint * interval '1 microsecond'
		WHERE (SELECT set_config('pgsession.store_write', 'on', true)) = 'on'
		ON CONFLICT (key_hash) DO UPDATE
		SET data = excluded.data, expires_at = excluded.expires_at,
			version = s.version + 1, updated_at = now()
		RETURNING version`
	if !notify {
		return load, write
	}
	return load, `WITH w AS (` + write + `)
		SELECT w.version FROM w, pg_notify($4, $5 || encode($1::bytea, 'hex') || ':' || w.version)`
}

func newRawStore(pool *pgxpool.Pool, table, channel string, notify bool) *rawStore {
	load, upsert := rawStatements(table, notify)
	return &rawStore{pool: pool, load: load, upsert: upsert, notify: notify, channel: channel, prefix: "1 " + rawOrigin + " "}
}

// rawLifetime is the row lifetime the floor writes: pgsession's default.
var rawLifetime = (time.Duration(pgsession.DefaultCookieMaxAge) * time.Second).Microseconds()

// write upserts one row.
func (r *rawStore) write(ctx context.Context, key, data []byte) error {
	var version int64
	var err error
	if r.notify {
		err = r.pool.QueryRow(ctx, r.upsert, key, data, rawLifetime, r.channel, r.prefix).Scan(&version)
	} else {
		err = r.pool.QueryRow(ctx, r.upsert, key, data, rawLifetime).Scan(&version)
	}
	if err != nil {
		return fmt.Errorf("raw upsert: %w", err)
	}
	return nil
}

// createSessionTable makes a table exactly as pgsession.New does (it runs
// pgsession.New and closes the store), so the floor pays the same indexes.
func createSessionTable(ctx context.Context, e *env) (string, error) {
	s, table, err := newPgsession(ctx, e, e.pool, pgsession.Config{CacheSize: -1, PurgeInterval: -1})
	if err != nil {
		return "", err
	}
	return table, s.Close()
}

func openRawPlain(ctx context.Context, e *env, p payload) (*fixture, error) {
	return openRaw(ctx, e, p, false)
}

func openRawNotify(ctx context.Context, e *env, p payload) (*fixture, error) {
	return openRaw(ctx, e, p, true)
}

func openRaw(ctx context.Context, e *env, p payload, notify bool) (*fixture, error) {
	table, err := createSessionTable(ctx, e)
	if err != nil {
		return nil, err
	}
	kind := "raw-pgx"
	if notify {
		kind = "raw-pgx-notify"
	}
	f := &fixture{kind: kind, p: p, table: pgx.Identifier{table}.Sanitize(), writes: []*pgxpool.Pool{e.pool}}
	f.onClose(func() error { return e.dropTable(table) })
	channel := "pgsbench:" + table
	f.raw = newRawStore(e.pool, table, channel, notify)
	if notify {
		stop, err := drainChannel(ctx, e, channel)
		if err != nil {
			_ = f.close()
			return nil, err
		}
		f.onClose(stop)
	}
	return f, nil
}

// drainChannel opens a connection that LISTENs on channel and reads every
// notification, as a listening instance would, until stop.
func drainChannel(ctx context.Context, e *env, channel string) (stop func() error, err error) {
	return watchChannel(ctx, e, channel, nil)
}

// watchChannel is drainChannel that also sends the arrival time of each
// notification to arrivals, if not nil, without ever blocking on it.
func watchChannel(ctx context.Context, e *env, channel string, arrivals chan<- time.Time) (stop func() error, err error) {
	conn, err := pgx.Connect(ctx, e.dbURL)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		_ = conn.Close(ctx)
		return nil, err
	}
	lctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if _, err := conn.WaitForNotification(lctx); err != nil {
				return
			}
			if arrivals != nil {
				select {
				case arrivals <- time.Now():
				default:
				}
			}
		}
	}()
	return func() error {
		cancel()
		wg.Wait()
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer ccancel()
		return conn.Close(cctx)
	}, nil
}

// client is one browser with one session in the store: for the gorilla
// stores the request that carries its cookie, for scs its token, for the
// floor its row.
type client struct {
	f   *fixture
	req *http.Request              // template; every operation uses a copy
	rec *httptest.ResponseRecorder // reused, its headers cleared per Save
	n   int                        // the counter's last saved value

	token string // scs

	key  []byte // raw: the row's primary key
	data []byte // raw: the row's data
}

// newClient creates a session with the standard values and saves it.
func (f *fixture) newClient(ctx context.Context) (*client, error) {
	c := &client{f: f, rec: httptest.NewRecorder(), n: 1}
	switch {
	case f.raw != nil:
		tok := make([]byte, 32)
		_, _ = rand.Read(tok)
		k := sha256.Sum256(tok)
		c.key = k[:]
		// The payload pgsession stores for the same values.
		data, err := pgsession.DefaultSerializer{}.Serialize(f.p.values())
		if err != nil {
			return nil, err
		}
		c.data = data
		if err := c.rawUpsert(); err != nil {
			return nil, err
		}
		return c, nil
	case f.scs != nil:
		sctx, err := f.scs.Load(ctx, "")
		if err != nil {
			return nil, err
		}
		for k, v := range f.p.values() {
			f.scs.Put(sctx, k.(string), v)
		}
		if c.token, _, err = f.scs.Commit(sctx); err != nil {
			return nil, fmt.Errorf("scs commit: %w", err)
		}
		return c, nil
	}
	r := httptest.NewRequest(http.MethodGet, "http://example.com/", nil).WithContext(ctx)
	s, err := f.store.Get(r, sessionName)
	if err != nil {
		return nil, fmt.Errorf("get a new session: %w", err)
	}
	for k, v := range f.p.values() {
		s.Values[k] = v
	}
	w := httptest.NewRecorder()
	if err := f.store.Save(r, w, s); err != nil {
		return nil, fmt.Errorf("save a new session: %w", err)
	}
	cookies := w.Result().Cookies()
	if len(cookies) != 1 || cookies[0].Name != sessionName {
		return nil, fmt.Errorf("save a new session: got cookies %v, want one named %q", cookies, sessionName)
	}
	c.req = httptest.NewRequest(http.MethodGet, "http://example.com/", nil)
	c.req.AddCookie(&http.Cookie{Name: sessionName, Value: cookies[0].Value})
	return c, nil
}

// setCookie makes the client send value from now on.
func (c *client) setCookie(value string) {
	c.req = c.req.Clone(c.req.Context())
	c.req.Header.Del("Cookie")
	c.req.AddCookie(&http.Cookie{Name: sessionName, Value: value})
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
	if err := c.f.p.check(s.Values); err != nil {
		return nil, nil, fmt.Errorf("get: %w", err)
	}
	return r, s, nil
}

// scsLoad runs scs's read path and reads the values.
func (c *client) scsLoad() (context.Context, error) {
	sm := c.f.scs
	ctx, err := sm.Load(context.Background(), c.token)
	if err != nil {
		return nil, fmt.Errorf("scs load: %w", err)
	}
	if sm.Status(ctx) != scs.Unmodified {
		return nil, errors.New("scs load: the store returned a new session, not the stored one")
	}
	v := map[any]any{}
	for _, k := range []string{keyCounter, keyUser, keyRole, keyPrefs} {
		v[k] = sm.Get(ctx, k)
	}
	if err := c.f.p.check(v); err != nil {
		return nil, fmt.Errorf("scs load: %w", err)
	}
	return ctx, nil
}

// get is the Get operation.
func (c *client) get() error {
	switch {
	case c.f.raw != nil:
		return c.rawLoad()
	case c.f.scs != nil:
		_, err := c.scsLoad()
		return err
	}
	_, _, err := c.load()
	return err
}

// saveChanged is Get, a new counter value, Save. For the floor it is the
// upsert alone, with different data each time.
func (c *client) saveChanged() error {
	c.n++
	switch {
	case c.f.raw != nil:
		binary.LittleEndian.PutUint64(c.data[len(c.data)-8:], uint64(c.n))
		return c.rawUpsert()
	case c.f.scs != nil:
		ctx, err := c.scsLoad()
		if err != nil {
			return err
		}
		c.f.scs.Put(ctx, keyCounter, c.n)
		if _, _, err := c.f.scs.Commit(ctx); err != nil {
			return fmt.Errorf("scs commit: %w", err)
		}
		return nil
	}
	r, s, err := c.load()
	if err != nil {
		return err
	}
	s.Values[keyCounter] = c.n
	return c.save(r, s)
}

// saveUnchanged is Get, then Save of the same values. For scs it is what
// its LoadAndSave middleware does: Load, and Commit only if the session
// was modified (it was not). For the floor it is the upsert with the same
// data.
func (c *client) saveUnchanged() error {
	switch {
	case c.f.raw != nil:
		return c.rawUpsert()
	case c.f.scs != nil:
		ctx, err := c.scsLoad()
		if err != nil {
			return err
		}
		if c.f.scs.Status(ctx) != scs.Unmodified {
			if _, _, err := c.f.scs.Commit(ctx); err != nil {
				return fmt.Errorf("scs commit: %w", err)
			}
		}
		return nil
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
	return c.f.raw.write(context.Background(), c.key, c.data)
}

// rawData returns what the client's row holds now.
func (c *client) rawData() ([]byte, error) {
	var data []byte
	err := c.f.raw.pool.QueryRow(context.Background(), c.f.raw.load, c.key).Scan(&data)
	return data, err
}

// op is one operation of the comparison.
type op struct {
	name     string
	parallel bool // run from parallelClients goroutines at once
	do       func(*client) error
	gets     bool // a read: rows that only save have none
}

// parallelClients is the number of goroutines of the parallel Get.
const parallelClients = 8

var ops = []op{
	{name: "Get", do: (*client).get, gets: true},
	{name: "Get x8", parallel: true, do: (*client).get, gets: true},
	{name: "Save changed", do: (*client).saveChanged},
	{name: "Save unchanged", do: (*client).saveUnchanged},
}
