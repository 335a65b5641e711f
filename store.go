package pgsession

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/securecookie"
	"github.com/gorilla/sessions"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed schema.sql
var schemaSQL string

// tokenLen is the number of random bytes in a session token.
const tokenLen = 32

// token is a session's secret: what the cookie carries and session.ID
// names. Only its SHA-256 reaches the database.
type token [tokenLen]byte

var _ sessions.Store = (*Store)(nil)

// Store is a gorilla/sessions Store that keeps sessions in PostgreSQL and
// serves reads from an in-process cache. It is safe for concurrent use.
type Store struct {
	pool     *pgxpool.Pool
	cfg      Config
	codecs   []securecookie.Codec
	cache    *cache // nil when disabled
	flight   flight
	listener *listener  // nil when the cache is disabled
	purger   *purger    // nil when automatic purging is off
	commits  *committer // nil when batching is off (MaxBatch 1)

	purgeBatchSize int    // rows per purge statement
	origin         string // identifies this Store in notifications
	prefix         string // payloadPrefix(origin)
	sql            queries
	log            *slog.Logger
	now            func() time.Time // the local clock; tests replace it
	counters       counters

	ctx       context.Context // canceled by Close; parent of background work
	cancel    context.CancelFunc
	wg        sync.WaitGroup // background goroutines
	closeOnce sync.Once
	closed    atomic.Bool

	writesMu   sync.Mutex // protects writes, closing
	writesDone sync.Cond  // signalled when writes drops to 0 while closing
	writes     int        // write operations in progress
	closing    bool
}

// queries are the store's SQL statements, with the table name in place.
type queries struct {
	table      string // quoted, schema-qualified table name
	load       string
	upsert     string
	refresh    string
	delete     string
	purge      string
	count      string
	clear      string
	batch      string
	tombstoned string
}

func newQueries(schema, table string) queries {
	t := pgx.Identifier{table}.Sanitize()
	if schema != "" {
		t = pgx.Identifier{schema, table}.Sanitize()
	}
	return queries{
		table: t,
		load: `SELECT data, version, expires_at, now() FROM ` + t +
			` WHERE key_hash = $1 AND expires_at > now() AND NOT deleted`,
		// The notification goes in the same statement, so in the same
		// transaction: it is delivered if and only if the write commits.
		upsert: `WITH w AS (
				INSERT INTO ` + t + ` AS s (key_hash, data, expires_at)
				VALUES ($1, $2, now() + $3::bigint * interval '1 microsecond')
				ON CONFLICT (key_hash) DO UPDATE
				SET data = excluded.data, expires_at = excluded.expires_at,
					version = s.version + 1, updated_at = now(), deleted = false
				WHERE NOT s.deleted OR s.expires_at <= now()
				RETURNING version)
			SELECT w.version FROM w, pg_notify($4, $5 || encode($1::bytea, 'hex') || ':' || w.version)`,
		refresh: `UPDATE ` + t + ` SET expires_at = now() + $3::bigint * interval '1 microsecond'
			WHERE key_hash = $1 AND version = $2 AND expires_at > now() AND NOT deleted`,
		// A delete leaves a tombstone (see schema.sql); purge removes it
		// once it expires.
		delete: `WITH d AS (` + tombstone(t, `key_hash = $1`) + `)
			SELECT count(*) FROM d, pg_notify($2, $3 || encode(d.key_hash, 'hex') || ':0')`,
		// SKIP LOCKED: rows a concurrent writer or purger holds are left
		// for the next batch instead of waited for.
		purge: `DELETE FROM ` + t + ` WHERE key_hash IN (
				SELECT key_hash FROM ` + t + ` WHERE expires_at <= now()
				LIMIT $1 FOR UPDATE SKIP LOCKED)`,
		count: `SELECT count(*) FROM ` + t + ` WHERE expires_at > now() AND NOT deleted`,
		// Tombstones too, so that requests under way cannot bring back
		// what Clear removed.
		clear: `WITH gone AS (DELETE FROM ` + t + ` WHERE expires_at <= now())
			UPDATE ` + t + ` SET deleted = true, data = '\x', version = version + 1, updated_at = now()
			WHERE NOT deleted AND expires_at > now()`,
		batch: batchSQL(t),
		tombstoned: `SELECT EXISTS (SELECT FROM ` + t +
			` WHERE key_hash = $1 AND deleted AND expires_at > now())`,
	}
}

// tombstone is the statement that deletes the sessions matching where.
func tombstone(t, where string) string {
	return `UPDATE ` + t + ` SET deleted = true, data = '\x', version = version + 1, updated_at = now()
		WHERE ` + where + ` AND NOT deleted RETURNING key_hash`
}

// ddl returns schema.sql with the configured names in place of the defaults.
func ddl(schema, table string) string {
	idx := pgx.Identifier{table + "_expires_at_idx"}.Sanitize()
	return strings.NewReplacer(
		DefaultTable+"_expires_at_idx", idx,
		DefaultTable, newQueries(schema, table).table,
	).Replace(schemaSQL)
}

// New returns a Store that keeps sessions in pool's database. It validates
// cfg (errors wrap ErrInvalidConfig), creates the session table unless
// cfg.SkipCreateTable is set, checks that the table can be read, and starts
// the store's background work. ctx bounds start-up only.
//
// The pool stays the caller's: Close does not close it.
func New(ctx context.Context, pool *pgxpool.Pool, cfg Config) (*Store, error) {
	if pool == nil {
		return nil, fmt.Errorf("%w: nil pool", ErrInvalidConfig)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	codecs := securecookie.CodecsFromPairs(cfg.KeyPairs...)
	for _, c := range codecs {
		sc := c.(*securecookie.SecureCookie)
		// The cookie carries raw bytes, so no serializer is needed. Its own
		// age check is off: the row's expires_at, on the database clock,
		// decides whether a session is alive.
		sc.SetSerializer(securecookie.NopEncoder{}).MaxAge(0)
	}
	var o [8]byte
	if _, err := rand.Read(o[:]); err != nil {
		return nil, fmt.Errorf("pgsession: generate origin id: %w", err)
	}
	s := &Store{
		pool:   pool,
		cfg:    cfg,
		codecs: codecs,
		cache:  newCache(cfg.CacheSize),
		origin: hex.EncodeToString(o[:]),
		sql:    newQueries(cfg.Schema, cfg.Table),
		log:    cfg.Logger,
		now:    cfg.Clock,

		purgeBatchSize: defaultPurgeBatch,
	}
	s.prefix = payloadPrefix(s.origin)
	s.writesDone.L = &s.writesMu
	if cfg.MaxBatch > 1 {
		s.commits = &committer{s: s, max: cfg.MaxBatch}
	}
	if !cfg.SkipCreateTable {
		if err := s.createTable(ctx); err != nil {
			return nil, err
		}
	}
	if err := s.checkTable(ctx); err != nil {
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if s.cache != nil {
		// Without a cache there is nothing to invalidate, so no listener;
		// writes still notify the instances that do cache.
		s.listener = newListener(s, s.origin)
		conn, err := s.listener.connect(ctx)
		if err != nil {
			s.cancel()
			return nil, fmt.Errorf("start listener on channel %q: %w", cfg.Channel, err)
		}
		s.listener.setUp(true)
		s.wg.Add(2)
		go func() {
			defer s.wg.Done()
			s.listener.run(s.ctx, conn)
		}()
		go func() {
			defer s.wg.Done()
			s.listener.apply()
		}()
	}
	if s.cache != nil && cfg.ScavengeInterval > 0 {
		sc := &scavenger{s: s, interval: cfg.ScavengeInterval}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			sc.run(s.ctx)
		}()
	}
	if cfg.PurgeInterval > 0 {
		s.purger = newPurger(s, cfg.PurgeInterval)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.purger.run(s.ctx)
		}()
	}
	return s, nil
}

// cacheUsable reports whether the cache may serve reads now: only while
// the listener is connected and proved itself alive within the lease.
func (s *Store) cacheUsable() bool {
	return s.listener != nil && s.listener.alive()
}

// checkTable makes sure the table is there with the columns the store
// uses, and that the connecting role may do everything the store does with
// it, so that a missing grant fails New, not the first logout.
func (s *Store) checkTable(ctx context.Context) error {
	if _, err := s.pool.Exec(ctx, `SELECT key_hash, data, version, expires_at, deleted FROM `+s.sql.table+` LIMIT 0`); err != nil {
		return fmt.Errorf("check session table %s: %w", s.sql.table, err)
	}
	var role string
	var missing []string
	err := s.pool.QueryRow(ctx, `SELECT current_user, array_remove(ARRAY[
			CASE WHEN has_table_privilege($1, 'SELECT') THEN NULL ELSE 'SELECT' END,
			CASE WHEN has_table_privilege($1, 'INSERT') THEN NULL ELSE 'INSERT' END,
			CASE WHEN has_table_privilege($1, 'UPDATE') THEN NULL ELSE 'UPDATE' END,
			CASE WHEN has_table_privilege($1, 'DELETE') THEN NULL ELSE 'DELETE' END], NULL)`,
		s.sql.table).Scan(&role, &missing)
	if err != nil {
		return fmt.Errorf("check privileges on %s: %w", s.sql.table, err)
	}
	if len(missing) > 0 {
		return fmt.Errorf("role %q lacks %s on session table %s: GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO %s",
			role, strings.Join(missing, ", "), s.sql.table, s.sql.table, pgx.Identifier{role}.Sanitize())
	}
	return nil
}

// ddlLockClass is the first key of the advisory lock that serializes table
// creation, so that instances starting together do not race in CREATE
// TABLE IF NOT EXISTS (which can fail with a unique violation then).
const ddlLockClass = 0x70677364 // "pgsd"

func (s *Store) createTable(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, ddlLockClass, s.sql.table); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, ddl(s.cfg.Schema, s.cfg.Table))
		return err
	})
	if err != nil {
		return fmt.Errorf("create session table %s (set SkipCreateTable to provision it yourself with schema.sql): %w", s.sql.table, err)
	}
	return nil
}

// Close stops the store's background work and waits for it to end. It does
// not close the pool. Close is idempotent; every other operation returns
// ErrClosed afterwards.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		// Writes already under way finish: none is lost or left half done.
		s.writesMu.Lock()
		s.closing = true
		for s.writes > 0 {
			s.writesDone.Wait()
		}
		s.writesMu.Unlock()
		s.cancel()
		s.wg.Wait()
	})
	return nil
}

// beginWrite registers a write operation, or reports that the store is
// closed. endWrite must follow.
func (s *Store) beginWrite() bool {
	s.writesMu.Lock()
	defer s.writesMu.Unlock()
	if s.closing {
		return false
	}
	s.writes++
	return true
}

func (s *Store) endWrite() {
	s.writesMu.Lock()
	defer s.writesMu.Unlock()
	s.writes--
	if s.writes == 0 && s.closing {
		s.writesDone.Broadcast()
	}
}

// write commits a write (or, with del, a delete) of k, batched with
// concurrent ones unless batching is off. For a delete, version is 1 if a
// row was deleted. superseded reports that a later write of k in the same
// batch won, so this one's data is not what is stored.
func (s *Store) write(ctx context.Context, k keyHash, data []byte, lifetime time.Duration, del bool) (version int64, superseded bool, err error) {
	op := &writeOp{key: k, data: data, lifetimeUS: lifetime.Microseconds(), del: del}
	if s.commits == nil {
		s.commitOne(ctx, op)
	} else {
		s.commits.write(ctx, op)
	}
	return op.version, op.superseded, op.err
}

// Get returns the session called name for the request, through gorilla's
// per-request registry: a second Get of the same name in one request
// returns the same *sessions.Session.
func (s *Store) Get(r *http.Request, name string) (*sessions.Session, error) {
	return sessions.GetRegistry(r).Get(s, name)
}

// New returns the session called name for the request, loading it from the
// cache or the database. It never returns a nil session. A missing cookie,
// one that fails verification, and a session that is gone or expired all
// give a new, empty session and no error. A database or decoding error is
// returned together with a new, empty session.
func (s *Store) New(r *http.Request, name string) (*sessions.Session, error) {
	session := sessions.NewSession(s, name)
	opts := *s.cfg.Cookie
	session.Options = &opts
	session.IsNew = true
	if s.closed.Load() {
		return session, ErrClosed
	}
	c, err := r.Cookie(name)
	if err != nil {
		return session, nil
	}
	tok, version, primary, ok := s.decodeCookie(name, c.Value)
	if !ok {
		s.counters.invalid.Add(1)
		return session, nil
	}
	k := sha256.Sum256(tok[:])
	e, err := s.lookup(r.Context(), k, version)
	if err != nil {
		s.counters.errors.Add(1)
		return session, fmt.Errorf("load session: %w", err)
	}
	if e == nil {
		return session, nil
	}
	if err := s.cfg.Serializer.Deserialize(e.data, session.Values); err != nil {
		clear(session.Values)
		s.counters.errors.Add(1)
		s.log.Error("pgsession: stored session cannot be decoded", "key_hash", fmt.Sprintf("%x", k[:8]), "err", err)
		return session, fmt.Errorf("decode session: %w", err)
	}
	if primary && e.version == version && e.cookie.Load() == nil {
		// The client's cookie is what an unchanged Save would sign again.
		e.cookie.Store(&signedCookie{name: name, value: c.Value})
	}
	session.ID = tok.String()
	session.IsNew = false
	return session, nil
}

// lookup returns the live entry for k, from the cache when it holds a
// version at least minVersion, else from the database. It returns nil for a
// session that does not exist or has expired.
func (s *Store) lookup(ctx context.Context, k keyHash, minVersion int64) (*entry, error) {
	usable := s.cacheUsable()
	if usable {
		if e, ok := s.cache.get(k); ok {
			if now := s.now(); s.fresh(e, minVersion, now) {
				e.touch(now)
				s.counters.hits.Add(1)
				return e, nil
			}
		}
	}
	s.counters.misses.Add(1)
	for {
		e, leader, err := s.flight.do(ctx, k, func() (*entry, error) {
			// Another flight may have filled the cache while we waited.
			if e, ok := s.cache.peek(k); ok && usable && s.fresh(e, minVersion, s.now()) {
				return e, nil
			}
			return s.load(ctx, k)
		})
		// A leader whose own request was canceled fails its followers with
		// its context's error; a follower whose request goes on tries again.
		if err != nil && !leader && ctx.Err() == nil &&
			(errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
			continue
		}
		// The shared read may have started before the write this client
		// was already given: it reads again itself.
		if err == nil && !leader && e != nil && e.version < minVersion {
			return s.load(ctx, k)
		}
		return e, err
	}
}

// fresh reports whether a cached entry may serve a client that has seen
// version minVersion.
func (s *Store) fresh(e *entry, minVersion int64, now time.Time) bool {
	return e.version >= minVersion && now.Before(e.deadline)
}

// load reads k from the database and fills the cache with it.
func (s *Store) load(ctx context.Context, k keyHash) (*entry, error) {
	rt := s.cache.begin(k)
	start := s.now()
	var (
		e          entry
		exp, dbNow time.Time
	)
	s.counters.loads.Add(1)
	err := s.pool.QueryRow(ctx, s.sql.load, k[:]).Scan(&e.data, &e.version, &exp, &dbNow)
	if err != nil {
		s.cache.end(k)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, nil
		}
		return nil, err
	}
	// The remaining lifetime is measured on the database clock alone and
	// counted from before the query was sent, so the cache gives the entry
	// up no later than the database does.
	e.deadline = start.Add(exp.Sub(dbNow))
	e.touch(start)
	s.cache.add(k, &e, rt)
	return &e, nil
}

// Save writes the session to the database, then updates the cache and sets
// the cookie. With Options.MaxAge < 0 it deletes the session and expires
// the cookie instead. On any error nothing is cached, no cookie is set, and
// what was stored before is unchanged.
func (s *Store) Save(r *http.Request, w http.ResponseWriter, session *sessions.Session) error {
	if !s.beginWrite() {
		return ErrClosed
	}
	defer s.endWrite()
	opts := session.Options
	if opts == nil {
		opts = s.cfg.Cookie
	}
	if opts.MaxAge < 0 {
		return s.delete(r.Context(), w, session, opts)
	}
	if err := s.save(r.Context(), w, session, opts); err != nil {
		s.counters.errors.Add(1)
		return err
	}
	return nil
}

func (s *Store) save(ctx context.Context, w http.ResponseWriter, session *sessions.Session, opts *sessions.Options) error {
	data, err := s.encode(session)
	if err != nil {
		return err
	}
	var tok token
	if session.ID == "" {
		if tok, err = newToken(); err != nil {
			return err
		}
	} else if tok, err = parseToken(session.ID); err != nil {
		return err
	}
	k := sha256.Sum256(tok[:])
	lifetime := s.cfg.rowLifetime(opts.MaxAge)
	now := s.now()

	// A Save that shortens the lifetime (a smaller MaxAge) is a full write:
	// the row must expire sooner, and other instances must hear of it.
	if e, ok := s.cache.peek(k); ok && session.ID != "" && s.cacheUsable() && bytes.Equal(e.data, data) &&
		now.Before(e.deadline) && !e.deadline.After(now.Add(lifetime)) {
		if !e.deadline.Before(now.Add(lifetime - s.cfg.refreshLag(lifetime))) {
			e.touch(now)
			s.counters.skipped.Add(1)
			return s.setCookie(w, session, opts, tok, e.version, e)
		}
		rt := s.cache.begin(k)
		ok, err := s.refresh(ctx, k, e.version, lifetime)
		if err != nil || !ok {
			s.cache.end(k)
		}
		if err != nil {
			return fmt.Errorf("save session: refresh expiry: %w", err)
		}
		if ok {
			s.counters.refreshes.Add(1)
			refreshed := newEntry(e.data, e.version, now.Add(lifetime), now)
			refreshed.cookie.Store(e.cookie.Load())
			s.cache.add(k, refreshed, rt)
			return s.setCookie(w, session, opts, tok, e.version, refreshed)
		}
		// The row changed or vanished since it was cached: write it whole.
	}

	rt := s.cache.begin(k)
	version, superseded, err := s.write(ctx, k, data, lifetime, false)
	if err != nil {
		// ErrDeleted included: the session was logged out while this
		// request held it, and stays logged out.
		s.cache.abort(k)
		return fmt.Errorf("save session: %w", err)
	}
	s.counters.saves.Add(1)
	var e *entry
	if superseded {
		s.cache.end(k) // the write that won caches its own data
	} else {
		e = newEntry(data, version, now.Add(lifetime), now)
		s.cache.add(k, e, rt)
	}
	session.ID = tok.String()
	return s.setCookie(w, session, opts, tok, version, e)
}

// encode serializes the session's values, within MaxLength.
func (s *Store) encode(session *sessions.Session) ([]byte, error) {
	data, err := s.cfg.Serializer.Serialize(session.Values)
	if err != nil {
		return nil, fmt.Errorf("encode session: %w", err)
	}
	if len(data) > s.cfg.MaxLength {
		return nil, fmt.Errorf("%w: %d bytes encoded, MaxLength is %d", ErrTooLarge, len(data), s.cfg.MaxLength)
	}
	if data == nil {
		data = []byte{} // the column is NOT NULL; a custom serializer may return nil
	}
	return data, nil
}

// refresh extends the expiry of k's row if it is still at version. It
// reports whether it was.
func (s *Store) refresh(ctx context.Context, k keyHash, version int64, lifetime time.Duration) (bool, error) {
	tag, err := s.pool.Exec(ctx, s.sql.refresh, k[:], version, lifetime.Microseconds())
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}

func (s *Store) delete(ctx context.Context, w http.ResponseWriter, session *sessions.Session, opts *sessions.Options) error {
	if session.ID != "" {
		tok, err := parseToken(session.ID)
		if err != nil {
			s.counters.errors.Add(1)
			return err
		}
		if err := s.deleteKey(ctx, sha256.Sum256(tok[:])); err != nil {
			s.counters.errors.Add(1)
			return err
		}
		session.ID = ""
	}
	http.SetCookie(w, sessions.NewCookie(session.Name(), "", opts))
	return nil
}

// setCookie sets the cookie for tok at version. e, if not nil, is the cache
// entry of that version: a cookie already signed for it is reused (the
// signature carries no expiry the store checks), and a new one is kept on it.
func (s *Store) setCookie(w http.ResponseWriter, session *sessions.Session, opts *sessions.Options, tok token, version int64, e *entry) error {
	name := session.Name()
	var value string
	if sc := e.signed(name, version); sc != nil {
		value = sc.value
	} else {
		payload := binary.AppendUvarint(tok[:], uint64(version))
		v, err := securecookie.EncodeMulti(name, payload, s.codecs...)
		if err != nil {
			return fmt.Errorf("encode cookie: %w", err)
		}
		value = v
		if e != nil && e.version == version {
			e.cookie.Store(&signedCookie{name: name, value: value})
		}
	}
	http.SetCookie(w, sessions.NewCookie(name, value, opts))
	return nil
}

// decodeCookie verifies a cookie value and returns the token and the
// version the client was last given; primary reports that the current key
// (the first pair) signed it.
func (s *Store) decodeCookie(name, value string) (tok token, version int64, primary, ok bool) {
	var payload []byte
	i, err := 0, error(nil)
	for i = range s.codecs {
		if err = s.codecs[i].Decode(name, value, &payload); err == nil {
			break
		}
	}
	if err != nil {
		s.log.Debug("pgsession: cookie rejected", "name", name, "err", err)
		return tok, 0, false, false
	}
	if len(payload) <= tokenLen {
		return tok, 0, false, false
	}
	v, n := binary.Uvarint(payload[tokenLen:])
	if n <= 0 || tokenLen+n != len(payload) || v > 1<<62 {
		return tok, 0, false, false
	}
	copy(tok[:], payload)
	return tok, int64(v), i == 0, true
}

func newToken() (token, error) {
	var t token
	if _, err := rand.Read(t[:]); err != nil {
		return t, fmt.Errorf("pgsession: generate session token: %w", err)
	}
	return t, nil
}

// String returns the token as session.ID carries it.
func (t token) String() string { return base64.RawURLEncoding.EncodeToString(t[:]) }

func parseToken(id string) (token, error) {
	var t token
	if len(id) != base64.RawURLEncoding.EncodedLen(tokenLen) {
		return t, fmt.Errorf("%w: %d characters", ErrInvalidID, len(id))
	}
	n, err := base64.RawURLEncoding.Decode(t[:], []byte(id))
	if err != nil || n != tokenLen {
		return t, fmt.Errorf("%w: not a token this store issued", ErrInvalidID)
	}
	return t, nil
}
