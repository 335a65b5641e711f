package pgsession

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
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

// verifyTimeout bounds how long New (or a reconnect) waits for the
// listener to hear the store's first probe.
const verifyTimeout = 5 * time.Second

// listener keeps one dedicated connection LISTENing on the store's channel
// and applies the invalidations that arrive to the cache. It knows nothing
// of the Store: it is given the cache, the counters, a logger, a function
// that opens a connection and one that sends a notification the way the
// store's writes do. Its states:
//
//   - UP: notifications evict entries older than the notified version. The
//     cache serves only while the listener has heard, within the lease, a
//     probe: a notification this store sent through the pool on its
//     channel, the path its writes' notifications take. Probes go every
//     quarter lease, so a listener that is connected but deaf to the pool
//     (PgBouncer in transaction mode, another database, another channel)
//     never serves. A listener that proves the connection alive but hears
//     nothing is not enough.
//   - DOWN, on any error: reads bypass the cache at once. Reconnect with
//     backoff, LISTEN, hear a probe, then drop the whole cache
//     (notifications sent while down are lost), then UP.
type listener struct {
	channel  string
	origin   string // this store's id: its own writes' echoes carry it
	lease    time.Duration
	wait     time.Duration                            // quiet time before a ping
	connect  func(context.Context) (*pgx.Conn, error) // opens a connection of the listener's own
	send     func(ctx context.Context, channel, payload string) (queueUsage float64, err error)
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

	ownPrefix   string                   // what this store's own notifications start with
	probePrefix string                   // what this listener's own probes start with
	conn        atomic.Pointer[net.Conn] // the connection serve reads, for hangUp
	queueUsage  atomic.Uint64            // float64 bits: pg_notification_queue_usage() at the last probe

	echoes echoes // deletes waiting to hear their own notification

	inOutage atomic.Bool // an outage was logged and has not ended
}

// outageBegins logs, once per outage, that reads bypass the cache.
func (l *listener) outageBegins(why string, args ...any) {
	if l.inOutage.CompareAndSwap(false, true) {
		l.log.Warn("pgsession: "+why+"; reads bypass the cache until it is back", append([]any{"channel", l.channel}, args...)...)
	}
}

// outageEnds logs that the cache serves again.
func (l *listener) outageEnds(why string) {
	if l.inOutage.CompareAndSwap(true, false) {
		l.log.Info("pgsession: "+why+"; the cache serves again", "channel", l.channel)
	}
}

// echoes lets a delete wait until the listener applied the delete's own
// notification. Every listener of the channel is signalled at the same
// commit, so by then the other instances have most likely applied it too:
// a logout returns when it has reached the other caches, not before.
type echoes struct {
	mu    sync.Mutex // protects waits
	waits map[keyHash][]chan struct{}
}

// expect registers a wait for the echo of a delete of k; forget must
// follow.
func (e *echoes) expect(k keyHash) chan struct{} {
	ch := make(chan struct{})
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.waits == nil {
		e.waits = make(map[keyHash][]chan struct{})
	}
	e.waits[k] = append(e.waits[k], ch)
	return ch
}

// forget removes the wait ch for k, heard or not.
func (e *echoes) forget(k keyHash, ch chan struct{}) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ws := e.waits[k]
	for i, w := range ws {
		if w == ch {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(e.waits, k)
	} else {
		e.waits[k] = ws
	}
}

// heard releases every wait for k.
func (e *echoes) heard(k keyHash) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ch := range e.waits[k] {
		close(ch)
	}
	delete(e.waits, k)
}

// listenerConfig is what a listener is given.
type listenerConfig struct {
	channel, origin string
	lease           time.Duration
	connect         func(context.Context) (*pgx.Conn, error)
	send            func(ctx context.Context, channel, payload string) (queueUsage float64, err error)
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
		send:     c.send,
		cache:    c.cache,
		counters: c.counters,
		log:      c.log,
		hook:     c.hook,
		base:     time.Now(),
		handoff:  make(chan string, c.handoff),
	}
	l.ownPrefix = payloadPrefix(c.origin)
	l.probePrefix = l.ownPrefix + probeKey + ":"
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

// proofAt records a probe sent at mono time sent as heard: the path from
// the pool to the listener worked at that time.
func (l *listener) proofAt(sent int64) {
	if sent > l.mono() {
		return // not a time this listener sent
	}
	for {
		last := l.lastProof.Load()
		if sent <= last || l.lastProof.CompareAndSwap(last, sent) {
			return
		}
	}
}

// ownProbe reports whether payload is one of this listener's probes, and
// when it was sent.
func (l *listener) ownProbe(payload string) (sent int64, ok bool) {
	rest, ok := strings.CutPrefix(payload, l.probePrefix)
	if !ok {
		return 0, false
	}
	sent, err := strconv.ParseInt(rest, 10, 64)
	return sent, err == nil
}

// probe sends a probe through the pool and samples the notification
// queue's usage in the same round trip.
func (l *listener) probe(ctx context.Context) error {
	return l.probeOn(ctx, l.channel)
}

// probeOn sends a probe on channel. When it fails, the queue's usage is
// sampled alone: a full queue fails every notification.
func (l *listener) probeOn(ctx context.Context, channel string) error {
	usage, err := l.send(ctx, channel, l.probePrefix+strconv.FormatInt(l.mono(), 10))
	if err != nil {
		if u, uerr := l.send(ctx, "", ""); uerr == nil {
			l.queueUsage.Store(math.Float64bits(u))
		}
		return err
	}
	l.queueUsage.Store(math.Float64bits(usage))
	return nil
}

// notifyQueueUsage is the notification queue's usage at the last probe.
func (l *listener) notifyQueueUsage() float64 {
	return math.Float64frombits(l.queueUsage.Load())
}

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
	l.state.Store(int32(ListenerUp))
}

// listen opens the dedicated connection, LISTENs on it, and makes sure it
// hears a probe sent through the pool, within the lease and verifyTimeout.
// On failure it removes its LISTEN and closes the connection.
//
// It first checks, on a channel of its own that nobody else uses, that the
// connection hears the pool at all, and only then sets the session up and
// LISTENs on the store's channel. Behind PgBouncer in transaction mode a
// LISTEN (or SET) reaches a server connection that PgBouncer lends to
// other clients, and an UNLISTEN may reach another one: so a connection
// that cannot hear leaves behind at most a LISTEN on a channel that gets no
// notifications but the one probe, and no settings.
func (l *listener) listen(ctx context.Context) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, l.lease+2*verifyTimeout)
	defer cancel()
	cctx, ccancel := context.WithTimeout(ctx, l.lease)
	defer ccancel()
	conn, err := l.connect(cctx)
	if err != nil {
		return nil, err
	}
	check := "pgsession_check_" + l.origin
	if _, err := conn.Exec(cctx, "LISTEN "+pgx.Identifier{check}.Sanitize()); err != nil {
		closeConn(conn)
		return nil, err
	}
	if err := l.verify(ctx, conn, check); err != nil {
		closeConn(conn)
		return nil, err
	}
	if err := l.prepare(cctx, conn, check); err != nil {
		closeConn(conn)
		return nil, err
	}
	if err := l.verify(ctx, conn, l.channel); err != nil {
		unlisten(conn)
		closeConn(conn)
		return nil, err
	}
	return conn, nil
}

// verify sends a probe through the pool on channel and waits for conn to
// hear it. Other notifications that arrive meanwhile are not applied: the
// cache is empty (New) or dropped after this (a reconnect).
func (l *listener) verify(ctx context.Context, conn *pgx.Conn, channel string) error {
	ctx, cancel := context.WithTimeout(ctx, min(l.lease, verifyTimeout))
	defer cancel()
	start := l.mono()
	if err := l.probeOn(ctx, channel); err != nil {
		return fmt.Errorf("send a probe notification through the pool: %w", err)
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("%w: a notification sent through the pool on channel %q did not reach the listening connection within %v. "+
					"Likely causes: the pool goes through PgBouncer in transaction or statement mode and ListenConnString is not set "+
					"(point it at PostgreSQL directly or at a session-mode pool); ListenConnString names another database or server "+
					"than the pool; the listening connection is on a read-only standby", ErrNotHeard, l.channel, min(l.lease, verifyTimeout))
			}
			return err
		}
		if sent, ok := l.ownProbe(n.Payload); ok && sent >= start {
			l.proofAt(sent)
			return nil
		}
	}
}

// unlisten removes the connection's LISTEN, best effort: behind PgBouncer
// in transaction mode it may reach another server connection than the one
// that ran LISTEN, which keeps it until PgBouncer resets that connection.
func unlisten(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, _ = conn.Exec(ctx, "UNLISTEN *")
}

func (l *listener) prepare(ctx context.Context, conn *pgx.Conn, check string) error {
	if _, err := conn.Exec(ctx, "UNLISTEN "+pgx.Identifier{check}.Sanitize()); err != nil {
		return err
	}
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

// probeSender returns the function that sends a probe as the store's
// writes send their notifications: through the pool, on the channel. It
// samples pg_notification_queue_usage() in the same round trip.
// With an empty channel it only samples the usage.
func probeSender(pool *pgxpool.Pool) func(context.Context, string, string) (float64, error) {
	return func(ctx context.Context, channel, payload string) (float64, error) {
		var usage float64
		if channel == "" {
			err := pool.QueryRow(ctx, `SELECT pg_notification_queue_usage()`).Scan(&usage)
			return usage, err
		}
		err := pool.QueryRow(ctx, `SELECT pg_notification_queue_usage() FROM (SELECT pg_notify($1, $2)) n`, channel, payload).Scan(&usage)
		return usage, err
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
			l.outageBegins("listener lost", "err", err)
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
			l.log.Debug("pgsession: listener reconnect failed", "channel", l.channel, "retry_in", backoff, "err", err)
			continue
		}
		conn, backoff = c, backoffMin
		l.counters.reconnects.Add(1)
		l.setUp(false)
		l.outageEnds("listener reconnected, cache dropped")
	}
}

// serve reads notifications from conn until it fails or ctx ends. It never
// blocks on applying them.
//
// It waits without a context of its own, since a context with a deadline
// costs a timer and a watching goroutine per notification, and every write
// of this store is echoed here. The connection is closed under it instead:
// when ctx ends, or by the prober when no probe came back within the lease
// (a connection that died silently, or went deaf).
//
// This store's own echoes are applied here, not handed off: they are most
// of the traffic, cheap to apply, and order does not matter, since every
// invalidation only evicts what is older than the version it names.
func (l *listener) serve(ctx context.Context, conn *pgx.Conn) error {
	netConn := conn.PgConn().Conn()
	l.conn.Store(&netConn)
	defer l.conn.Store(nil)
	stop := context.AfterFunc(ctx, func() { _ = netConn.Close() })
	defer stop()
	for {
		n, err := conn.WaitForNotification(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		p := n.Payload
		// This store's own echoes apply here; its probes go in order with
		// the others' invalidations, so that a probe proves the listener
		// alive only once everything heard before it is applied.
		if strings.HasPrefix(p, l.ownPrefix) && !strings.HasPrefix(p, l.probePrefix) {
			l.applyPayload(p)
			continue
		}
		select {
		case l.handoff <- p:
		default:
			// Better to forget everything than to miss one invalidation.
			l.cache.drop()
			l.counters.drops.Add(1)
			l.log.Warn("pgsession: invalidations arrive faster than they are applied; cache dropped", "channel", l.channel)
			if sent, ok := l.ownProbe(p); ok {
				l.proofAt(sent) // nothing is left to apply
			}
		}
	}
}

// hangUp closes the listening connection under serve, which then returns
// and the listener reconnects.
func (l *listener) hangUp() {
	if c := l.conn.Load(); c != nil {
		_ = (*c).Close()
	}
}

// queueWarn is the notification queue usage from which the prober warns.
const queueWarn = 0.5

// runProber sends a probe every quarter lease until ctx ends, and says so,
// once per outage, when the listener has not heard one within the lease.
func (l *listener) runProber(ctx context.Context) {
	t := time.NewTicker(l.wait)
	defer t.Stop()
	var probeErr error
	warnedQueue := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, l.wait)
		probeErr = l.probe(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if probeErr != nil {
			l.counters.probeErrors.Add(1)
		}
		switch up := ListenerState(l.state.Load()) == ListenerUp; {
		case up && !l.alive():
			l.outageBegins("listener heard no probe within the lease", "lease", l.lease, "probe_err", probeErr)
			// Silently dead, or deaf: start over with a connection that
			// proves it hears.
			l.hangUp()
		case l.alive():
			l.outageEnds("listener hears probes again")
		}
		switch u := l.notifyQueueUsage(); {
		case u >= queueWarn && !warnedQueue:
			warnedQueue = true
			l.log.Warn("pgsession: the cluster's notification queue is filling up; when it is full every write fails. "+
				"Look for a session LISTENing somewhere that is idle in a transaction (pg_stat_activity)",
				"usage", u, "channel", l.channel)
		case u < queueWarn/2:
			warnedQueue = false
		}
	}
}

// apply evicts what the notifications handed off name, until the read loop
// ends.
func (l *listener) apply() {
	for p := range l.handoff {
		if l.hook != nil {
			l.hook()
		}
		l.applyPayload(p)
	}
}

// applyPayload evicts what one notification names.
func (l *listener) applyPayload(p string) {
	if sent, ok := l.ownProbe(p); ok {
		l.proofAt(sent)
		return
	}
	origin, items, err := parsePayload(p)
	if err == nil && probesOnly(items) {
		return // another instance's probe
	}
	l.counters.notifications.Add(1)
	if err != nil {
		l.counters.badNotifications.Add(1)
		l.log.Warn("pgsession: ignored a malformed notification", "channel", l.channel, "payload_len", len(p))
		return
	}
	// This store's own writes are echoed too. Its entry of the version
	// it wrote stays; an older one is evicted (the write's own add may
	// have been dropped, say by a reconnect's drop, while a read of the
	// older version landed), but not counted: nothing changed elsewhere.
	own := origin == l.origin
	{
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
			if own && it.version == 0 {
				l.echoes.heard(it.key)
			}
		}
	}
}
