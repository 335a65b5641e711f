package pgsession

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ListenerState is the state of a Store's notification listener.
type ListenerState int32

const (
	// ListenerOff: the store has no listener (its cache is disabled).
	ListenerOff ListenerState = iota
	// ListenerDown: the listener is not connected, or has not proved
	// itself alive within Config.ListenLease: reads bypass the cache.
	ListenerDown
	// ListenerUp: the listener is connected and alive: the cache serves.
	ListenerUp
)

func (s ListenerState) String() string {
	switch s {
	case ListenerOff:
		return "off"
	case ListenerDown:
		return "down"
	case ListenerUp:
		return "up"
	}
	return "ListenerState(" + strconv.Itoa(int(s)) + ")"
}

// MarshalText renders the state as String does ("up", "down", "off"), so
// that Stats reads well as JSON.
func (s ListenerState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads what MarshalText writes.
func (s *ListenerState) UnmarshalText(b []byte) error {
	for _, v := range []ListenerState{ListenerOff, ListenerDown, ListenerUp} {
		if string(b) == v.String() {
			*s = v
			return nil
		}
	}
	return fmt.Errorf("unknown listener state %q", b)
}

// Reconnect backoff of the listener.
const (
	backoffMin = 250 * time.Millisecond
	backoffMax = 30 * time.Second
)

// defaultHandoff is how many notifications may wait between the read loop
// and the goroutine that applies them.
const defaultHandoff = 4096

// listener keeps one dedicated connection LISTENing on the store's channel
// and applies the invalidations that arrive to the cache. It knows nothing
// of the Store: it is given the cache, the counters, a logger and a
// function that opens a connection. Its states:
//
//   - UP: notifications evict entries older than the notified version. The
//     cache serves only while the connection proved itself alive (a
//     notification, or a ping after a quiet wait) within the lease.
//   - DOWN, on any error: reads bypass the cache at once. Reconnect with
//     backoff, LISTEN, then drop the whole cache (notifications sent while
//     down are lost), then UP.
type listener struct {
	channel  string
	origin   string // this store's id: its own writes' echoes carry it
	lease    time.Duration
	wait     time.Duration                            // quiet time before a ping
	connect  func(context.Context) (*pgx.Conn, error) // opens a connection of the listener's own
	cache    *cache
	counters *counters
	log      *slog.Logger
	hook     func() // when not nil, runs before each notification is applied (a test seam)

	state     atomic.Int32 // ListenerState
	lastProof atomic.Int64 // monotonic ns (since base) of the last proof of life
	downSince atomic.Int64 // monotonic ns (since base) the current outage began
	downTotal atomic.Int64 // ns spent DOWN in finished outages
	base      time.Time    // origin of the monotonic ns above

	handoff chan string // payloads from the read loop to apply
}

// listenerConfig is what a listener is given.
type listenerConfig struct {
	channel, origin string
	lease           time.Duration
	connect         func(context.Context) (*pgx.Conn, error)
	cache           *cache
	counters        *counters
	log             *slog.Logger
	handoff         int    // hand-off buffer size; 0: defaultHandoff
	hook            func() // see listener.hook
}

func newListener(c listenerConfig) *listener {
	if c.handoff <= 0 {
		c.handoff = defaultHandoff
	}
	l := &listener{
		channel:  c.channel,
		origin:   c.origin,
		lease:    c.lease,
		wait:     c.lease / 4,
		connect:  c.connect,
		cache:    c.cache,
		counters: c.counters,
		log:      c.log,
		hook:     c.hook,
		base:     time.Now(),
		handoff:  make(chan string, c.handoff),
	}
	l.state.Store(int32(ListenerDown))
	return l
}

// mono returns the monotonic time since l.base. The lease is about real
// time, so it is measured on the real clock, not the store's.
func (l *listener) mono() int64 { return int64(time.Since(l.base)) }

// alive reports whether the cache may serve: the listener is UP and proved
// itself alive within the lease.
func (l *listener) alive() bool {
	return ListenerState(l.state.Load()) == ListenerUp && l.mono()-l.lastProof.Load() < int64(l.lease)
}

func (l *listener) proof() { l.lastProof.Store(l.mono()) }

// currentState is the state as Stats reports it: UP past its lease is DOWN.
func (l *listener) currentState() ListenerState {
	if ListenerState(l.state.Load()) == ListenerUp && !l.alive() {
		return ListenerDown
	}
	return ListenerState(l.state.Load())
}

// downTime is the time spent DOWN, the current outage included.
func (l *listener) downTime() time.Duration {
	d := l.downTotal.Load()
	if ListenerState(l.state.Load()) == ListenerDown {
		d += l.mono() - l.downSince.Load()
	}
	return time.Duration(d)
}

func (l *listener) setDown() {
	if ListenerState(l.state.Swap(int32(ListenerDown))) == ListenerUp {
		l.downSince.Store(l.mono())
	}
}

// setUp marks a fresh connection, already LISTENing, as UP. Everything
// cached before may have missed notifications, so the cache is dropped
// first: LISTEN, then drop, then serve.
func (l *listener) setUp(initial bool) {
	if !initial {
		l.cache.drop()
		l.counters.drops.Add(1)
		l.downTotal.Add(l.mono() - l.downSince.Load())
	}
	l.proof()
	l.state.Store(int32(ListenerUp))
}

// listen opens the dedicated connection and LISTENs on it, within the lease.
func (l *listener) listen(ctx context.Context) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, l.lease)
	defer cancel()
	conn, err := l.connect(ctx)
	if err != nil {
		return nil, err
	}
	if err := l.prepare(ctx, conn); err != nil {
		closeConn(conn)
		return nil, err
	}
	return conn, nil
}

func (l *listener) prepare(ctx context.Context, conn *pgx.Conn) error {
	if _, err := conn.Exec(ctx, "SELECT set_config('application_name', $1, false)", "pgsession listener "+l.origin); err != nil {
		return err
	}
	// A listening session is idle by design: PostgreSQL 14+ would end it
	// after idle_session_timeout. Older servers do not know the setting.
	if _, err := conn.Exec(ctx, "SET idle_session_timeout = 0"); err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42704" {
			return err
		}
	}
	_, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{l.channel}.Sanitize())
	return err
}

// listenConnector returns the function that opens the listener's
// connection: from connString when set, else a connection taken from the
// pool and hijacked. Hijacked, it is the listener's own: the pool will not
// hand it to anyone else (who would inherit the LISTEN) nor close it at its
// MaxConnLifetime.
func listenConnector(pool *pgxpool.Pool, connString string) func(context.Context) (*pgx.Conn, error) {
	if connString != "" {
		return func(ctx context.Context) (*pgx.Conn, error) {
			cc, err := pgx.ParseConfig(connString)
			if err != nil {
				return nil, fmt.Errorf("parse ListenConnString: %w", err)
			}
			return pgx.ConnectConfig(ctx, cc)
		}
	}
	return func(ctx context.Context) (*pgx.Conn, error) {
		pc, err := pool.Acquire(ctx)
		if err != nil {
			return nil, err
		}
		return pc.Hijack(), nil
	}
}

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// run keeps the listener connected until ctx ends. conn is the first
// connection, made by New.
func (l *listener) run(ctx context.Context, conn *pgx.Conn) {
	defer close(l.handoff)
	backoff := backoffMin
	for {
		if conn != nil {
			err := l.serve(ctx, conn)
			l.setDown()
			closeConn(conn)
			conn = nil
			if ctx.Err() != nil {
				return
			}
			l.log.Warn("pgsession: listener lost; reads bypass the cache until it is back", "channel", l.channel, "err", err)
		}
		// Full jitter over the upper half, so a fleet does not reconnect in step.
		d := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		c, err := l.listen(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			backoff = min(2*backoff, backoffMax)
			l.log.Warn("pgsession: listener reconnect failed", "channel", l.channel, "retry_in", backoff, "err", err)
			continue
		}
		conn, backoff = c, backoffMin
		l.counters.reconnects.Add(1)
		l.setUp(false)
		l.log.Info("pgsession: listener reconnected; cache dropped", "channel", l.channel)
	}
}

// serve reads notifications from conn until it fails or ctx ends. It never
// blocks on applying them.
func (l *listener) serve(ctx context.Context, conn *pgx.Conn) error {
	for {
		wctx, cancel := context.WithTimeout(ctx, l.wait)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if err == nil {
			l.proof()
			select {
			case l.handoff <- n.Payload:
			default:
				// Better to forget everything than to miss one invalidation.
				l.cache.drop()
				l.counters.drops.Add(1)
				l.log.Warn("pgsession: invalidations arrive faster than they are applied; cache dropped", "channel", l.channel)
			}
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !pgconn.Timeout(err) || conn.IsClosed() {
			return err
		}
		// Quiet for a while: make sure the connection is really there.
		pctx, cancel := context.WithTimeout(ctx, l.wait)
		err = conn.Ping(pctx)
		cancel()
		if err != nil {
			return fmt.Errorf("ping: %w", err)
		}
		l.proof()
	}
}

// apply evicts what the notifications handed off name, until the read loop
// ends.
func (l *listener) apply() {
	for p := range l.handoff {
		if l.hook != nil {
			l.hook()
		}
		l.counters.notifications.Add(1)
		origin, items, err := parsePayload(p)
		if err != nil {
			l.counters.badNotifications.Add(1)
			l.log.Warn("pgsession: ignored a malformed notification", "channel", l.channel, "payload_len", len(p))
			continue
		}
		// This store's own writes are echoed too. Its entry of the version
		// it wrote stays; an older one is evicted (the write's own add may
		// have been dropped, say by a reconnect's drop, while a read of the
		// older version landed), but not counted: nothing changed elsewhere.
		own := origin == l.origin
		for _, it := range items {
			if it.all {
				if !own { // this store's own Clear dropped its cache already
					l.cache.drop()
					l.counters.drops.Add(1)
				}
				continue
			}
			if l.cache.invalidate(it.key, it.version) && !own {
				l.counters.evictions.Add(1)
			}
		}
	}
}
