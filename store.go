package pgsession

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gorilla/securecookie"
	"github.com/gorilla/sessions"
	"github.com/jackc/pgx/v5/pgxpool"
)

var _ sessions.Store = (*Store)(nil)

// Store is a gorilla/sessions Store that keeps sessions in PostgreSQL and
// serves reads from an in-process cache. It is safe for concurrent use.
type Store struct {
	pool     *pgxpool.Pool
	cfg      Config
	codecs   []securecookie.Codec
	cache    *cache                      // nil when disabled
	memo     *cookieMemo                 // nil when the cache is disabled
	attrs    atomic.Pointer[cookieAttrs] // the Set-Cookie attributes last rendered (writeCookie)
	flight   flight
	listener *listener   // nil when the cache is disabled
	purger   *purger     // nil when automatic purging is off
	commits  *committer  // nil when batching is off (MaxBatch 1)
	bound    *writeBound // Config.WriteTimeout's contexts; nil without one
	touches  *toucher    // nil without IdleTimeout
	replica  *replica    // nil without ReadPool

	touchEvery int64 // cache-clock ns between touches of one session (IdleTimeout); 0: none

	purgeBatchSize int    // rows per purge statement
	origin         string // identifies this Store in notifications
	prefix         string // payloadPrefix(origin)
	sql            queries
	log            *slog.Logger
	now            func() time.Time // the local clock, Config.Clock
	realClock      bool             // Config.Clock is time.Now, by default
	counters       counters

	writes    gate               // write operations under way
	cancel    context.CancelFunc // stops the background goroutines
	wg        sync.WaitGroup     // background goroutines
	closeOnce sync.Once
	closed    atomic.Bool
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
	realClock := cfg.Clock == nil
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var o [8]byte
	if _, err := rand.Read(o[:]); err != nil {
		return nil, fmt.Errorf("generate origin id: %w", err)
	}
	cache, memo := newCacheAndMemo(cfg)
	s := &Store{
		pool:   pool,
		cfg:    cfg,
		codecs: newCodecs(cfg.KeyPairs),
		memo:   memo,
		cache:  cache,
		origin: hex.EncodeToString(o[:]),
		sql:    newQueries(cfg.Schema, cfg.Table, cfg.shape()),
		log:    cfg.Logger,
		now:    cfg.Clock,

		realClock: realClock,

		purgeBatchSize: defaultPurgeBatch,
	}
	s.prefix = payloadPrefix(s.origin)
	s.replica = newReplica(cfg, pool, s.cache, &s.counters)
	if cfg.MaxBatch > 1 {
		s.commits = &committer{s: s, max: cfg.MaxBatch}
	}
	if cfg.WriteTimeout > 0 {
		s.bound = newWriteBound(cfg.WriteTimeout)
	}
	if !cfg.SkipCreateTable {
		if err := s.createTable(ctx); err != nil {
			return nil, err
		}
	}
	if s.cfg.Channel == "" {
		if s.cfg.Channel, err = s.tableChannel(ctx); err != nil {
			return nil, err
		}
		cfg.Channel = s.cfg.Channel
	}
	if err := s.ensureTriggers(ctx); err != nil {
		return nil, err
	}
	if err := s.checkTable(ctx); err != nil {
		return nil, err
	}

	bg, cancel := context.WithCancel(context.Background())
	s.cancel = cancel

	// Without a cache there is nothing to invalidate, so no listener;
	// writes still notify the instances that do cache.
	if s.cache != nil {
		s.listener = newListener(listenerConfig{
			channel:  cfg.Channel,
			origin:   s.origin,
			lease:    cfg.ListenLease,
			send:     probeSender(pool),
			cache:    s.cache,
			counters: &s.counters,
			log:      s.log,
			handoff:  cfg.knobs.handoff,
			hook:     cfg.knobs.applyHook,
		})
		s.wg.Go(s.listener.apply)
		s.wg.Go(func() { s.listener.runProber(bg) })
		if err := s.listener.start(ctx, pool, cfg.ListenConnString); err != nil {
			s.listener.stop()
			cancel()
			s.wg.Wait()
			return nil, fmt.Errorf("start listener on channel %q: %w", cfg.Channel, err)
		}
		if cfg.ScavengeInterval > 0 {
			sc := &scavenger{s: s, interval: cfg.ScavengeInterval}
			s.wg.Go(func() { sc.run(bg) })
		}
	}
	if s.replica != nil {
		s.wg.Go(func() { s.replica.run(bg) })
	}
	if cfg.IdleTimeout > 0 {
		s.touches = newToucher(s)
		s.touchEvery = max(int64(cfg.refreshLag(cfg.IdleTimeout)), 1)
		s.wg.Go(func() { s.touches.run(bg) })
	}
	if cfg.PurgeInterval > 0 {
		s.purger = newPurger(s, cfg.PurgeInterval)
		s.wg.Go(func() { s.purger.run(bg) })
	}
	return s, nil
}

// Get returns the session called name for the request, through gorilla's
// per-request registry: a second Get of the same name in one request
// returns the same *sessions.Session. Under AutoSave, the session is
// saved for the handler.
func (s *Store) Get(r *http.Request, name string) (*sessions.Session, error) {
	session, err := sessions.GetRegistry(r).Get(s, name)
	s.track(r, session)
	return session, err
}

// New returns the session called name for the request, loading it from the
// cache or the database. It never returns a nil session. A missing cookie,
// one that fails verification, and a session that is gone or expired all
// give a new, empty session and no error. A database error, or stored data
// that cannot be decoded (ErrCorrupt), is returned together with a new,
// empty session.
func (s *Store) New(r *http.Request, name string) (*sessions.Session, error) {
	session := sessions.NewSession(s, name)
	*session.Options = *s.cfg.Cookie // into the Options NewSession made
	session.IsNew = true
	if s.closed.Load() {
		return session, ErrClosed
	}
	value, v, found := requestCookie(r, name, s.memo)
	if !found {
		return session, nil
	}
	hit := v != nil // not the cookie's first request here
	if !hit {
		var ok bool
		if v, ok = s.verify(name, value); !ok {
			s.counters.invalid.Add(1)
			return session, nil
		}
	}
	k := v.k
	e, ok, err := s.lookup(r.Context(), k, v.version)
	if err != nil {
		s.counters.errors.Add(1)
		return session, fmt.Errorf("load session: %w", err)
	}
	if !ok || e.dead {
		return session, nil
	}
	if err := s.decodeValues(session, v, hit, e.data); err != nil {
		clear(session.Values)
		s.counters.errors.Add(1)
		s.log.Error("pgsession: stored session cannot be decoded", "key_hash", fmt.Sprintf("%x", k[:8]), "err", err)
		if !errors.Is(err, ErrCorrupt) {
			err = fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		return session, fmt.Errorf("load session: %w", err)
	}
	session.ID = v.id
	session.IsNew = false
	return session, nil
}

// Save writes the session to the database, then updates the cache and sets
// the cookie. With Options.MaxAge < 0 it deletes the session and expires
// the cookie instead. On any error nothing is cached and no cookie is set.
// What is stored is then unchanged, with one exception: when the request's
// context (or Config.WriteTimeout) ends after the write was sent, it may
// still commit, and the error wraps ErrUncertain as well as the context's
// error. Save waits for its write under the request's context only: a
// session locked by another transaction delays no other session's Save.
func (s *Store) Save(r *http.Request, w http.ResponseWriter, session *sessions.Session) error {
	if !s.writes.enter() {
		return ErrClosed
	}
	defer s.writes.leave()
	opts := session.Options
	if opts == nil {
		opts = s.cfg.Cookie
	}
	if opts.MaxAge < 0 {
		ctx, cancel := s.writeContext(r.Context())
		defer cancel()
		return s.delete(ctx, w, session, opts)
	}
	if err := s.save(r, w, session, opts); err != nil {
		s.counters.errors.Add(1)
		return fmt.Errorf("save session: %w", err)
	}
	return nil
}

// save writes session unless the cache proves the row already holds it
// (then it only sets the cookie); the write, and only the write, runs
// under the write context.
func (s *Store) save(r *http.Request, w http.ResponseWriter, session *sessions.Session, opts *sessions.Options) error {
	meta, err := s.rowMeta(r, session)
	if err != nil {
		return err
	}
	// The request's cookie, when it is this session's: what the memo
	// remembers of it spares hashing the token, encoding values it was
	// served unchanged, and signing the cookie again.
	var v *verified
	if session.ID != "" {
		if _, v, _ = requestCookie(r, session.Name(), s.memo); v != nil && v.id != session.ID {
			v = nil
		}
	}
	var tok token
	var k keyHash
	switch {
	case v != nil:
		tok, k = v.tok, v.k
	case session.ID == "":
		if tok, err = newToken(); err != nil {
			return err
		}
		k = sha256.Sum256(tok[:])
	default:
		if tok, err = parseToken(session.ID); err != nil {
			return err
		}
		k = sha256.Sum256(tok[:])
	}
	e, cached := s.cache.peek(k)
	data := s.servedUnchanged(v, e, cached, session.Values)
	if data == nil {
		if cached && !e.dead {
			data, err = s.encodeAs(session, e.data)
		} else {
			data, err = s.encode(session)
		}
		if err != nil {
			return err
		}
	}
	lifetime, err := s.cfg.rowLifetime(opts.MaxAge)
	if err != nil {
		return err
	}
	now := s.now()

	// A Save that shortens the lifetime (a smaller MaxAge) is a full write:
	// the row must expire sooner, and other instances must hear of it
	// (under CoherenceRevocations, within MaxStale). An entry older than
	// MaxStale (CoherenceRevocations) is not trusted to skip the write: the
	// refresh, which checks the version, validates it.
	same := cached && !e.dead && session.ID != "" && s.cacheUsableAt(now) && bytes.Equal(e.data, data) &&
		s.cache.alive(e, now) && e.deadline <= s.cache.at(now.Add(lifetime))
	if same && s.current(e, now) && (e.capped || e.deadline >= s.cache.at(now.Add(lifetime-s.cfg.refreshLag(lifetime)))) {
		if s.cache.at(now)-e.lastUsed >= int64(recentUse) {
			s.cache.touch(k, e.version, now) // else this request's own Get just did
		}
		s.counters.skipped.Add(1)
		return s.setCookie(w, v, session, opts, tok, e.version)
	}
	ctx, cancel := s.writeContext(r.Context())
	defer cancel()
	if same {
		rt := s.cache.begin(k)
		// An invalidation applied between the peek and begin left no trace
		// for add to see (nothing was in flight): make sure the entry is
		// still there. Plain SQL may change data without a new version, so
		// the refresh's own version check cannot tell.
		ok, remaining, err := false, time.Duration(0), error(nil)
		if cur, still := s.cache.peek(k); still && cur.version == e.version && unsafe.SliceData(cur.data) == unsafe.SliceData(e.data) {
			ok, remaining, err = s.refresh(ctx, k, e.version, lifetime)
		}
		if err != nil || !ok {
			s.cache.end(k)
		}
		if err != nil {
			return fmt.Errorf("refresh expiry: %w", err)
		}
		if ok {
			s.counters.refreshes.Add(1)
			s.cache.add(k, s.newEntry(e.data, e.version, now, remaining, lifetime), rt)
			return s.setCookie(w, v, session, opts, tok, e.version)
		}
		// The row changed or vanished since it was cached: write it whole.
	}

	rt := s.cache.begin(k)
	res, err := s.write(ctx, k, data, lifetime, false, meta)
	if err == nil && res.userChanged {
		// Login, or a change of user: the token is renewed, as Regenerate
		// does, so that a token known before is worthless after it.
		s.cache.end(k)
		return s.renew(ctx, w, session, opts, data, meta, &k)
	}
	if err != nil {
		// ErrDeleted included: the session was logged out while this
		// request held it, and stays logged out. ErrUncertain too: the
		// write may have committed, so no copy is kept.
		s.cache.abort(k)
		return err
	}
	s.counters.saves.Add(1)
	if res.superseded {
		s.cache.end(k) // the write that won caches its own data
	} else {
		// The row may have kept its expiry (see upsertRow): the entry
		// lives as long as the row does, counted from before the write.
		s.cache.add(k, s.newEntry(data, res.version, now, res.remaining, lifetime), rt)
	}
	session.ID = tok.String()
	return s.setCookie(w, nil, session, opts, tok, res.version)
}

// delete is Save with MaxAge < 0: it deletes the session and expires the
// cookie.
func (s *Store) delete(ctx context.Context, w http.ResponseWriter, session *sessions.Session, opts *sessions.Options) error {
	if session.ID != "" {
		tok, err := parseToken(session.ID)
		if err == nil {
			err = s.deleteKey(ctx, sha256.Sum256(tok[:]))
		}
		if err != nil {
			s.counters.errors.Add(1)
			return fmt.Errorf("delete session: %w", err)
		}
		session.ID = ""
	}
	http.SetCookie(w, sessions.NewCookie(session.Name(), "", opts))
	return nil
}

// Close stops the store's background work and waits for it to end. Writes
// already under way finish first. It does not close the pool. Close is
// idempotent; every other operation returns ErrClosed afterwards.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.writes.close()
		s.cancel()
		if s.listener != nil {
			s.listener.stop()
		}
		s.wg.Wait()
		if s.bound != nil {
			s.bound.close()
		}
	})
	return nil
}
