package pgsession

import (
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/gorilla/sessions"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Defaults used for the zero value of the matching Config field.
const (
	DefaultTable             = "http_sessions"
	DefaultCookieMaxAge      = 30 * 24 * 60 * 60 // seconds: 30 days
	DefaultCacheSize         = 10000
	DefaultCacheBytes        = 64 << 20
	DefaultMaxLength         = 64 << 10
	DefaultBrowserSessionTTL = 24 * time.Hour
	DefaultRefreshAfter      = 5 * time.Minute
	DefaultListenLease       = 10 * time.Second
	DefaultMaxIdle           = 5 * time.Minute
	DefaultScavengeInterval  = time.Second
	DefaultPurgeInterval     = 5 * time.Minute
	DefaultMaxBatch          = 128
	DefaultWriteTimeout      = 30 * time.Second
)

// DefaultCookie returns a new copy of the cookie attributes a Store uses
// when Config.Cookie is nil: Path "/", MaxAge DefaultCookieMaxAge (30
// days), HttpOnly, SameSite Lax. Config.Cookie is used as given, so start
// from this to change one attribute:
//
//	cookie := pgsession.DefaultCookie()
//	cookie.Secure = true // everything else stays the default
//	cfg := pgsession.Config{KeyPairs: keys, Cookie: cookie}
func DefaultCookie() *sessions.Options {
	return &sessions.Options{
		Path:     "/",
		MaxAge:   DefaultCookieMaxAge,
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
	}
}

// minHashKeyLen is the shortest accepted securecookie hash key.
const minHashKeyLen = 32

// maxIdentifierLen is PostgreSQL's NAMEDATALEN-1: longer names are truncated
// by the server, so two different configured names could silently meet.
const maxIdentifierLen = 63

// maxCookieMaxAge is the largest cookie MaxAge, in seconds, whose lifetime
// is a time.Duration (about 292 years); beyond it MaxAge * time.Second
// overflows, here and in the cookie's Expires.
const maxCookieMaxAge = math.MaxInt64 / int64(time.Second)

// minInterval is the shortest ScavengeInterval and PurgeInterval: a shorter
// ticker only spins a core.
const minInterval = 10 * time.Millisecond

// Config configures a Store. The zero value of every field but KeyPairs means
// "use the default". A negative value turns off what can be turned off
// (CacheSize, RefreshAfter's lag, ScavengeInterval, PurgeInterval,
// MaxBatch's batching); for MaxLength, BrowserSessionTTL, ListenLease,
// MaxIdle, IdleTimeout, AbsoluteTimeout and MaxStale it is an error. Each field says which. The Config is copied by
// New: changing it afterwards has no effect.
type Config struct {
	// KeyPairs are securecookie hash and block key pairs, as in
	// securecookie.CodecsFromPairs: hash key, block key, hash key, block key,
	// ... The first pair signs (and, with a block key, encrypts) new cookies;
	// later pairs are still accepted for reading, which is how keys are
	// rotated. Hash keys must be at least 32 bytes (use
	// securecookie.GenerateRandomKey(64)); a block key is empty (no
	// encryption) or 16, 24 or 32 bytes (AES-128, -192, -256). Required.
	KeyPairs [][]byte

	// Cookie holds the cookie attributes given to every new session. Each
	// session gets its own copy, so a handler may change them per session.
	// Default (nil): DefaultCookie(), that is Path "/", MaxAge 30 days,
	// HttpOnly, SameSite Lax. When set it is used as given, except that an
	// empty Path becomes "/": &sessions.Options{Secure: true} means no
	// HttpOnly, no SameSite and MaxAge 0 (a browser-session cookie whose
	// row lives BrowserSessionTTL). To change one attribute, start from
	// DefaultCookie().
	//
	// MaxAge also sets how long the session lives in the database. MaxAge 0
	// is a browser-session cookie: its row lives for BrowserSessionTTL after
	// the last write. Saving a session with MaxAge < 0 deletes it; so a
	// Cookie with MaxAge < 0 is an error, as is one whose lifetime does not
	// fit a time.Duration (over about 292 years).
	Cookie *sessions.Options

	// Schema is the schema of the session table. Default: none, so the
	// table is found through the connection's search_path.
	Schema string

	// Table is the name of the session table. Default "http_sessions".
	// Names are quoted, so any valid PostgreSQL identifier works, case
	// included; control characters are an error (in Schema and Channel
	// too).
	Table string

	// SkipCreateTable stops New from creating the table, its index and its
	// triggers; New then checks that the table can be read and has its
	// triggers. Use it when the schema is provisioned by a migration (see
	// schema.sql, and upgrade.sql for a table made by an earlier version)
	// and the store runs as a role without CREATE.
	SkipCreateTable bool

	// CacheSize is the number of sessions kept in the in-process cache.
	// Default 10000; negative disables the cache, so every Get reads the
	// database.
	CacheSize int

	// CacheBytes bounds the cache's memory: the encoded sessions it holds
	// plus about 200 bytes of bookkeeping each, and the memo of verified
	// cookies (at most a sixteenth of it, reserved: 4 MiB of the default).
	// Past it, the least recently used sessions leave first; a session
	// larger than a tenth of it is not cached at all. CacheSize bounds the
	// count, CacheBytes the bytes: whichever is reached first evicts.
	// Default 64 MiB; negative means no byte bound.
	CacheBytes int64

	// MaxLength is the largest encoded session, in bytes, that Save will
	// store; a larger one fails with ErrTooLarge. Default 64 KiB; negative is
	// an error.
	MaxLength int

	// Serializer encodes session values. Default: DefaultSerializer, a
	// compact encoding for string keys with basic values and gob for
	// anything else.
	Serializer Serializer

	// Logger receives the store's diagnostics. Default: discard.
	Logger *slog.Logger

	// BrowserSessionTTL is how long the row of a session saved with cookie
	// MaxAge 0 (a browser-session cookie) lives after its last write: the
	// browser keeps such a cookie until it is closed, which the server
	// cannot observe. Default 24 hours; less than a second is an error.
	BrowserSessionTTL time.Duration

	// RefreshAfter is how far the stored expiry may lag behind the one a
	// Save would set before an unchanged session is written again.
	//
	// A Save whose encoded values equal what this instance knows to be
	// stored costs no database round trip, as long as the stored expiry is
	// at most min(RefreshAfter, lifetime/10) behind now+lifetime, where
	// lifetime is the cookie MaxAge (or BrowserSessionTTL). Past that, Save
	// extends the expiry with a short UPDATE that leaves data and version
	// alone. So an active session that does not change is written at most
	// once per RefreshAfter, and expires at most that much earlier than a
	// store that writes on every request would let it. Default 5 minutes;
	// negative means never lag: every Save of an unchanged session extends
	// its expiry.
	RefreshAfter time.Duration

	// Channel is the notification channel the store's instances use to tell
	// each other which sessions changed. Default: "pgsession:" followed by
	// the lower-cased schema and name of the table as PostgreSQL resolves
	// it, so that instances reaching one table through different Schema or
	// search_path settings share a channel. Instances sharing a table must
	// use the same channel: the table's triggers notify one, and New fails
	// (ErrInvalidConfig) when it is not Config.Channel.
	Channel string

	// ListenConnString, when set, is used to open the store's dedicated
	// listening connection instead of taking one from the pool. Stores of
	// one process with the same pool and ListenConnString share that
	// connection, whatever their tables. Set it when
	// the pool goes through PgBouncer in transaction or statement mode,
	// where LISTEN does not work: point it at PostgreSQL directly (or at a
	// session-mode pool), on the primary.
	ListenConnString string

	// ListenLease bounds how stale the cache can be when the listening
	// connection dies without an error (a silently dropped TCP connection):
	// the cache serves only while the listener proved itself alive within
	// the lease, by a notification or a ping after a quiet quarter of it.
	// Default 10 seconds; less than 100 ms is an error.
	ListenLease time.Duration

	// MaxIdle is how long a session may go unread and unwritten in this
	// process before it leaves the cache. The session itself stays valid
	// in the database; its next read loads it again. Default 5 minutes;
	// negative is an error (turn the scavenger off instead).
	MaxIdle time.Duration

	// ScavengeInterval is how often idle entries are looked for. A pass
	// walks from the least recently used end and stops at the first entry
	// still fresh, so its cost follows the number evicted, not the cache
	// size. Default 1 second; under 10 ms is an error; negative disables
	// the scavenger (idle entries then leave only when the cache is full).
	// Expired sessions are never served from the cache either way.
	ScavengeInterval time.Duration

	// PurgeInterval is how often expired rows are deleted from the table,
	// in batches, by one instance at a time. Each instance jitters its
	// interval by +/-50% and counts it from the last purge, manual
	// (PurgeExpired) or automatic. Default 5 minutes; under 10 ms is an
	// error; negative disables automatic purging (expired rows are never
	// served either way).
	PurgeInterval time.Duration

	// WriteTimeout bounds every write (Save, logout, Regenerate, Delete,
	// one batch of Clear) whose request has no earlier deadline, and so
	// bounds Close, which waits for writes under way. A write that runs out
	// of it fails with context.DeadlineExceeded (and ErrUncertain if it had
	// been sent). Writes share timers: those that start within 1/32 of the
	// timeout (at most a second) of each other end together, so a write
	// gets at most WriteTimeout and at least all but that slot of it.
	// Default 30 seconds; negative means none.
	WriteTimeout time.Duration

	// MaxBatch is the largest number of writes (Saves and deletes) of this
	// store that commit together. Writes that arrive while another commit
	// is in flight queue up and go in the next transaction: one multi-row
	// statement and one notification per 90 sessions, so the cluster-wide
	// lock a notifying commit takes is paid once per batch, not once per
	// write. A write that finds no commit in flight goes at once, alone.
	// Each Save still returns only after its own write committed, with its
	// own error. Default 128; 1 (or negative) disables batching.
	MaxBatch int

	// UserKey names the session value that holds the session's user, e.g.
	// "user_id": a string or any integer type (stored as decimal text);
	// absent, nil or "" means no user. The user goes in its own indexed
	// column, so that Sessions, Revoke, LogoutUser and LogoutOthers can
	// find a user's sessions. A Save that changes it (login, logout of the
	// user while keeping the session, a switch of user) renews the token
	// as Regenerate does: the old token is logged out everywhere, so a
	// session ID planted before login is worthless after it. A value of
	// another type fails Save with ErrInvalidUser. Default "": no user
	// index.
	UserKey string

	// RecordClient keeps the client's IP address (the host part of
	// r.RemoteAddr) and User-Agent (its first 512 bytes) with the session,
	// for SessionInfo: a "your devices" page. They are written with the
	// session's writes; a logout erases them with the data (the tombstone
	// keeps neither). Behind a proxy or load balancer, r.RemoteAddr is the
	// proxy's: set it from the forwarded header with your router's
	// real-IP middleware (chi's middleware.RealIP, echo's IPExtractor,
	// gin's trusted proxies), for trusted proxies only. Default false.
	RecordClient bool

	// AbsoluteTimeout ends a session this long after it began, whatever
	// its activity (OWASP's absolute timeout): no write or refresh extends
	// its row past CreatedAt + AbsoluteTimeout, and the cache never serves
	// it past that either. A session begins when its token is issued: at
	// its first Save, and again at login (a change of UserKey's value, or
	// Regenerate). A request that loaded the session before its end gets
	// ErrDeleted from Save: it cannot start the session again under the
	// same token. Cookie MaxAge keeps meaning the cookie's lifetime in the
	// browser. Default 0: off; negative is an error.
	AbsoluteTimeout time.Duration

	// IdleTimeout ends a session unused this long on every instance: its
	// row lives IdleTimeout (at most the cookie's lifetime) past its last
	// write or read. Reads count: a read of a session, from the cache or
	// the database, schedules a touch of its row, at most one per session
	// per instance per min(RefreshAfter, IdleTimeout/10), which a
	// background goroutine sends in batches, off the request's path (a Get
	// never waits for one), with no notification and no version bump. A
	// failed touch is counted (Stats.TouchesFailed) and logged, never an
	// error of Get. Default 0: off (a row lives the cookie's lifetime past
	// its last write); negative is an error.
	IdleTimeout time.Duration

	// Clock is the store's local clock: it decides when cache entries are
	// idle (MaxIdle) and when they pass the expiry read from the database.
	// Expiry in the database always follows the database clock. Default
	// time.Now; replace it only for tests and simulations.
	Clock func() time.Time

	// Coherence chooses which writes are notified to the other instances'
	// caches: CoherenceAll (the default) every write, CoherenceRevocations
	// only logouts and deletions. See Coherence for what each guarantees.
	Coherence Coherence

	// MaxStale bounds, under CoherenceRevocations, how old a cached entry
	// may be: one written, loaded or re-validated from the database longer
	// than MaxStale ago (on Clock) is read again before it serves. A copy
	// read from a ReadPool's standby is as old as the standby's replay (see
	// ReadPool), not as the read: a lagging standby never renews it. So a
	// change made on another instance (new values, or a shorter lifetime
	// from a smaller MaxAge) reaches this instance's readers within
	// MaxStale, and at once for the client that made it (its cookie
	// version). Ignored under CoherenceAll, where every change is
	// notified. Default 30 seconds (DefaultMaxStale); negative is an
	// error.
	MaxStale time.Duration

	// ReadPool, when set, serves cache misses from a read replica: a
	// physical streaming standby of the primary that pool connects to
	// (not a logical replica, not another cluster). Its answer is used
	// only when replication lag cannot show in it; the primary is read
	// instead for a row older than the client's cookie, for no row when
	// the cookie has a version (a login or a refresh of the expiry not
	// replayed yet), for a live row that a logout or write this instance
	// heard of may have superseded (WAL positions tell: see
	// DefaultReplicaSampleInterval), and while the listener is down.
	// Under CoherenceRevocations, where saves are not heard, a standby's
	// live row counts, for MaxStale, as current only as of the last sample
	// of the primary's WAL position that the standby had replayed: a row
	// already MaxStale old by that count is read from the primary. It
	// needs the cache (CacheSize >= 0), and read committed sessions (the
	// default; under repeatable read live rows are never trusted). A
	// ReadPool that fails, or takes over a second, is read around and
	// logged once per outage, and not tried again for a second (doubling
	// up to 30 s while it keeps failing). The pool stays the caller's: Close does not
	// close it. Default nil: every miss reads the primary.
	ReadPool *pgxpool.Pool

	knobs knobs // set only by this package's tests
}

// knobs are per-store test seams: internal sizes and hooks that tests set
// through export_test.go, so that tests using them can run in parallel.
type knobs struct {
	handoff   int    // the listener's hand-off buffer; 0: defaultHandoff
	applyHook func() // run before each notification is applied

	replicaSample time.Duration // the ReadPool guard's sampling interval; 0: DefaultReplicaSampleInterval
}

// withDefaults returns a copy of c with defaults applied, or an error
// wrapping ErrInvalidConfig.
func (c Config) withDefaults() (Config, error) {
	if len(c.KeyPairs) == 0 {
		return c, fmt.Errorf("%w: KeyPairs is required (a hash key of at least %d bytes)", ErrInvalidConfig, minHashKeyLen)
	}
	for i, k := range c.KeyPairs {
		if i%2 == 0 {
			if len(k) < minHashKeyLen {
				return c, fmt.Errorf("%w: KeyPairs[%d] is a hash key of %d bytes, want at least %d (use securecookie.GenerateRandomKey(64))", ErrInvalidConfig, i, len(k), minHashKeyLen)
			}
			continue
		}
		switch len(k) {
		case 0, 16, 24, 32:
		default:
			return c, fmt.Errorf("%w: KeyPairs[%d] is a block key of %d bytes, want 0, 16, 24 or 32", ErrInvalidConfig, i, len(k))
		}
	}

	if c.Cookie == nil {
		c.Cookie = DefaultCookie()
	} else {
		o := *c.Cookie
		if o.Path == "" {
			o.Path = "/"
		}
		c.Cookie = &o
	}
	switch {
	case c.Cookie.MaxAge < 0:
		// Every Save would delete: the store could never hold a session.
		return c, fmt.Errorf("%w: Cookie.MaxAge %d is negative: every Save would delete the session", ErrInvalidConfig, c.Cookie.MaxAge)
	case int64(c.Cookie.MaxAge) > maxCookieMaxAge:
		return c, fmt.Errorf("%w: Cookie.MaxAge %d seconds overflows a time.Duration (at most %d)", ErrInvalidConfig, c.Cookie.MaxAge, maxCookieMaxAge)
	}

	if c.Table == "" {
		c.Table = DefaultTable
	}
	if err := checkIdentifier("Table", c.Table); err != nil {
		return c, err
	}
	if c.Schema != "" {
		if err := checkIdentifier("Schema", c.Schema); err != nil {
			return c, err
		}
	}

	if c.CacheSize == 0 {
		c.CacheSize = DefaultCacheSize
	}
	switch {
	case c.CacheBytes == 0:
		c.CacheBytes = DefaultCacheBytes
	case c.CacheBytes < 0:
		c.CacheBytes = 0 // no byte bound
	}
	switch {
	case c.MaxLength == 0:
		c.MaxLength = DefaultMaxLength
	case c.MaxLength < 0:
		return c, fmt.Errorf("%w: MaxLength %d is negative", ErrInvalidConfig, c.MaxLength)
	}
	if c.Serializer == nil {
		c.Serializer = DefaultSerializer{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case c.BrowserSessionTTL == 0:
		c.BrowserSessionTTL = DefaultBrowserSessionTTL
	case c.BrowserSessionTTL < time.Second:
		return c, fmt.Errorf("%w: BrowserSessionTTL %v is shorter than a second", ErrInvalidConfig, c.BrowserSessionTTL)
	}
	switch {
	case c.RefreshAfter == 0:
		c.RefreshAfter = DefaultRefreshAfter
	case c.RefreshAfter < 0:
		c.RefreshAfter = 0
	}
	// An empty Channel is derived by New from the table's resolved identity.
	if c.Channel != "" {
		if err := checkIdentifier("Channel", c.Channel); err != nil {
			return c, err
		}
	}
	switch {
	case c.ListenLease == 0:
		c.ListenLease = DefaultListenLease
	case c.ListenLease < 100*time.Millisecond:
		return c, fmt.Errorf("%w: ListenLease %v is shorter than 100ms", ErrInvalidConfig, c.ListenLease)
	}
	switch {
	case c.MaxIdle == 0:
		c.MaxIdle = DefaultMaxIdle
	case c.MaxIdle < 0:
		return c, fmt.Errorf("%w: MaxIdle %v is negative (disable the scavenger with a negative ScavengeInterval)", ErrInvalidConfig, c.MaxIdle)
	}
	if c.IdleTimeout < 0 {
		return c, fmt.Errorf("%w: IdleTimeout %v is negative (0 turns it off)", ErrInvalidConfig, c.IdleTimeout)
	}
	if c.AbsoluteTimeout < 0 {
		return c, fmt.Errorf("%w: AbsoluteTimeout %v is negative (0 turns it off)", ErrInvalidConfig, c.AbsoluteTimeout)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	switch c.Coherence {
	case CoherenceAll, CoherenceRevocations:
	default:
		return c, fmt.Errorf("%w: Coherence %v is not a known mode", ErrInvalidConfig, c.Coherence)
	}
	switch {
	case c.MaxStale == 0:
		c.MaxStale = DefaultMaxStale
	case c.MaxStale < 0:
		return c, fmt.Errorf("%w: MaxStale %v is negative", ErrInvalidConfig, c.MaxStale)
	}
	switch {
	case c.WriteTimeout == 0:
		c.WriteTimeout = DefaultWriteTimeout
	case c.WriteTimeout < 0:
		c.WriteTimeout = 0 // none
	}
	switch {
	case c.MaxBatch == 0:
		c.MaxBatch = DefaultMaxBatch
	case c.MaxBatch < 0:
		c.MaxBatch = 1
	}
	switch {
	case c.ScavengeInterval == 0:
		c.ScavengeInterval = DefaultScavengeInterval
	case c.ScavengeInterval > 0 && c.ScavengeInterval < minInterval:
		return c, fmt.Errorf("%w: ScavengeInterval %v is shorter than %v (negative disables the scavenger)", ErrInvalidConfig, c.ScavengeInterval, minInterval)
	}
	switch {
	case c.PurgeInterval == 0:
		c.PurgeInterval = DefaultPurgeInterval
	case c.PurgeInterval > 0 && c.PurgeInterval < minInterval:
		return c, fmt.Errorf("%w: PurgeInterval %v is shorter than %v (negative disables purging)", ErrInvalidConfig, c.PurgeInterval, minInterval)
	}
	if c.ReadPool != nil && c.CacheSize < 0 {
		return c, fmt.Errorf("%w: ReadPool needs the cache (CacheSize %d disables it): replica reads are checked against the invalidations its listener hears", ErrInvalidConfig, c.CacheSize)
	}
	if c.ListenConnString != "" {
		if _, err := pgx.ParseConfig(c.ListenConnString); err != nil {
			return c, fmt.Errorf("%w: ListenConnString: %v", ErrInvalidConfig, err)
		}
	}
	return c, nil
}

func checkIdentifier(field, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: %s is empty", ErrInvalidConfig, field)
	case len(name) > maxIdentifierLen:
		return fmt.Errorf("%w: %s %q is %d bytes, PostgreSQL allows %d", ErrInvalidConfig, field, name, len(name), maxIdentifierLen)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: %s %q is not valid UTF-8", ErrInvalidConfig, field, name)
	}
	for _, r := range name {
		// Control characters have no business in a name, and a newline
		// is how a name would break out of an SQL comment.
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: %s %q contains the control character %U", ErrInvalidConfig, field, name, r)
		}
	}
	return nil
}

// rowLifetime is how long a row written with cookie MaxAge maxAge lives. A
// MaxAge whose lifetime overflows time.Duration is an error wrapping
// ErrInvalidConfig, and nothing may be written with it: the lifetime would
// wrap around (New rejects such a Config.Cookie; this catches a session's
// own Options).
func (c *Config) rowLifetime(maxAge int) (time.Duration, error) {
	if int64(maxAge) > maxCookieMaxAge {
		return 0, fmt.Errorf("%w: cookie MaxAge %d seconds overflows (at most %d)", ErrInvalidConfig, maxAge, maxCookieMaxAge)
	}
	lifetime := c.BrowserSessionTTL
	if maxAge > 0 {
		lifetime = time.Duration(maxAge) * time.Second
	}
	if c.IdleTimeout > 0 {
		lifetime = min(lifetime, c.IdleTimeout)
	}
	return lifetime, nil
}

// refreshLag is how far a stored expiry may lag before an unchanged Save
// writes it again.
func (c *Config) refreshLag(lifetime time.Duration) time.Duration {
	return min(c.RefreshAfter, lifetime/10)
}

// shape is what the store's writes store beyond data and expiry.
func (c *Config) shape() writeShape {
	return writeShape{users: c.UserKey != "", client: c.RecordClient, abs: c.AbsoluteTimeout > 0,
		quiet: c.Coherence == CoherenceRevocations}
}
