package pgsession

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The process's listening connections.
//
// Every Store of a process that uses the same pool (and the same
// ListenConnString) shares one hub: one dedicated connection that LISTENs
// on the channels of all of them and hands each notification to the
// listeners of its channel. An application with several session tables so
// holds one listening connection per process, not one per table: every
// listening backend is woken by every notification of the database, which
// is what limits how many instances one PostgreSQL serves.
//
// The hub only keeps the connection. Each Store's listener still proves,
// with probes of its own sent through its pool, that what its writes
// notify reaches it, and serves its cache only while it does.

// hubs is the process's registry of hubs, by key.
var hubs struct {
	mu sync.Mutex // protects m
	m  map[hubKey]*hub
}

// hubKey identifies the Stores that share a listening connection.
type hubKey struct {
	pool       *pgxpool.Pool
	connString string
}

// hub keeps one listening connection for the listeners that joined it.
type hub struct {
	key     hubKey
	id      string                                   // names its connection (application_name) and check channel
	connect func(context.Context) (*pgx.Conn, error) // opens the dedicated connection

	mu       sync.Mutex              // protects everything below
	subs     map[*listener]struct{}  // the listeners that joined
	channels map[string]int          // channel → listeners on it
	listened map[string]bool         // channels LISTENed on the current connection
	dirty    bool                    // channels changed since the reader last synced
	waiting  bool                    // the reader waits for a notification: a wake may interrupt it
	woke     bool                    // a wake set a read deadline the reader has not seen yet
	conn     *pgx.Conn               // the current connection, nil between connections
	gen      uint64                  // counts connections; a hang-up names the one it means
	failed   chan struct{}           // closed, and replaced, when a connection attempt fails
	lastErr  error                   // why the last attempt failed; nil once one succeeded
	attempts uint64                  // connection attempts begun
	failedAt uint64                  // the attempt that failed last
	retry    chan struct{}           // a listener joined after the current attempt began: do not back off
	byChan   atomic.Pointer[chanMap] // channel → listeners, read without the lock by the reader

	cancel context.CancelFunc
	done   chan struct{} // closed when the reader has stopped and closed its connection
}

type chanMap = map[string][]*listener

// joinHub adds l to the hub of its key, starting the hub when it is the
// first, and has the hub LISTEN on l's channel. It returns the hub and
// how many connection attempts it had begun before l joined.
func joinHub(l *listener, pool *pgxpool.Pool, connString string) (*hub, uint64, error) {
	key := hubKey{pool: pool, connString: connString}
	hubs.mu.Lock()
	defer hubs.mu.Unlock()
	h := hubs.m[key]
	if h == nil {
		var id [6]byte
		if _, err := crand.Read(id[:]); err != nil {
			return nil, 0, fmt.Errorf("generate listener id: %w", err)
		}
		h = &hub{
			key:      key,
			id:       hex.EncodeToString(id[:]),
			connect:  listenConnector(pool, connString),
			subs:     make(map[*listener]struct{}),
			channels: make(map[string]int),
			listened: make(map[string]bool),
			failed:   make(chan struct{}),
			retry:    make(chan struct{}, 1),
			done:     make(chan struct{}),
		}
		h.byChan.Store(&chanMap{})
		if hubs.m == nil {
			hubs.m = make(map[hubKey]*hub)
		}
		hubs.m[key] = h
		ctx, cancel := context.WithCancel(context.Background())
		h.cancel = cancel
		l.hub = h
		joined := h.add(l)
		go h.run(ctx)
		return h, joined, nil
	}
	l.hub = h
	return h, h.add(l), nil
}

// add registers l and arranges for its channel to be LISTENed. It returns
// how many connection attempts had begun.
func (h *hub) add(l *listener) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subs[l] = struct{}{}
	h.channels[l.channel]++
	h.rebuild()
	if h.listened[l.channel] {
		l.listening(h.gen)
		return h.attempts
	}
	h.wakeLocked()
	if h.conn == nil {
		// A new Store should not wait for a backoff of up to 30 s: the
		// next attempt, if this one fails, follows at once.
		select {
		case h.retry <- struct{}{}:
		default:
		}
	}
	return h.attempts
}

// leave removes l. After it returns, l is given no more notifications
// except possibly one being handed over right now, which l ignores once
// stopped. The last listener to leave stops the hub and waits for its
// connection to close.
func (h *hub) leave(l *listener) {
	hubs.mu.Lock()
	h.mu.Lock()
	if _, ok := h.subs[l]; !ok {
		h.mu.Unlock()
		hubs.mu.Unlock()
		return
	}
	delete(h.subs, l)
	if h.channels[l.channel]--; h.channels[l.channel] <= 0 {
		delete(h.channels, l.channel)
	}
	h.rebuild()
	last := len(h.subs) == 0
	if last {
		delete(hubs.m, h.key)
	} else {
		h.wakeLocked()
	}
	h.mu.Unlock()
	hubs.mu.Unlock()
	if last {
		h.cancel()
		<-h.done
	}
}

// rebuild renews the channel map the reader hands notifications out by.
func (h *hub) rebuild() {
	m := make(chanMap, len(h.channels))
	for l := range h.subs {
		m[l.channel] = append(m[l.channel], l)
	}
	h.byChan.Store(&m)
}

// wakeLocked tells the reader that the channels changed: it interrupts a
// wait for a notification by setting a past read deadline, which pgconn
// reports as a timeout and survives. It never interrupts a statement.
func (h *hub) wakeLocked() {
	h.dirty = true
	if h.waiting && h.conn != nil {
		h.woke = true
		_ = h.conn.PgConn().Conn().SetReadDeadline(time.Now())
	}
}

// hangUp closes connection gen under the reader, which then reconnects. A
// listener that has not heard its probes within its lease calls it; the
// generation keeps a late caller from closing the next connection. When
// the reader still delivers the caller's probes, within its lease and on
// this connection, the connection hears the pool and only the caller's
// applier is late: it stays DOWN, serving no cache, instead of taking
// every other Store's cache down with it.
func (h *hub) hangUp(gen uint64, from *listener) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if from.deliveredLately() {
		return
	}
	if h.conn != nil && h.gen == gen {
		_ = h.conn.PgConn().Conn().Close()
	}
}

// failures returns a channel closed at the next failed connection attempt.
func (h *hub) failures() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.failed
}

// subsLocked lists the listeners.
func (h *hub) subsLocked() []*listener {
	subs := make([]*listener, 0, len(h.subs))
	for l := range h.subs {
		subs = append(subs, l)
	}
	return subs
}

// failedSince returns why the last connection attempt failed, when it
// began after the first after attempts begun.
func (h *hub) failedSince(after uint64) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failedAt > after {
		return h.lastErr
	}
	return nil
}

// checker returns one of the hub's listeners, whose pool checks a new
// connection, and the longest lease of them, which bounds the attempt; or
// nil.
func (h *hub) checker() (*listener, time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var any *listener
	var lease time.Duration
	for l := range h.subs {
		any, lease = l, max(lease, l.lease)
	}
	return any, lease
}

// run keeps the hub connected until ctx ends.
func (h *hub) run(ctx context.Context) {
	defer close(h.done)
	backoff := backoffMin
	for first := true; ; first = false {
		if !first {
			// Full jitter over the upper half, so a fleet does not
			// reconnect in step.
			t := time.NewTimer(backoff/2 + rand.N(backoff/2+1))
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			case <-h.retry:
				t.Stop()
				backoff = backoffMin
			}
		}
		h.mu.Lock()
		select {
		case <-h.retry: // this attempt answers the joins so far
		default:
		}
		h.attempts++
		attempt := h.attempts
		h.mu.Unlock()
		conn, err := h.open(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			h.mu.Lock()
			h.lastErr, h.failedAt = err, attempt
			close(h.failed)
			h.failed = make(chan struct{})
			subs := h.subsLocked()
			h.mu.Unlock()
			for _, l := range subs {
				l.log.Debug("pgsession: listener reconnect failed", "channel", l.channel, "retry_in", backoff, "err", err)
			}
			backoff = min(2*backoff, backoffMax)
			continue
		}
		backoff = backoffMin
		h.mu.Lock()
		h.lastErr = nil
		h.mu.Unlock()
		err = h.serve(ctx, conn)
		h.mu.Lock()
		h.conn, h.waiting, h.woke = nil, false, false
		clear(h.listened)
		subs := h.subsLocked()
		for _, l := range subs {
			l.lost()
		}
		h.mu.Unlock()
		if ctx.Err() == nil {
			for _, l := range subs {
				l.lostLogged(err)
			}
		}
		closeConn(conn)
		if ctx.Err() != nil {
			return
		}
	}
}

// open connects and makes sure the connection hears what the pool
// notifies, on a channel of the hub's own that nobody else uses, before it
// sets the session up. Behind PgBouncer in transaction mode a LISTEN (or
// SET) reaches a server connection that PgBouncer lends to other clients,
// and an UNLISTEN may reach another one: so a connection that cannot hear
// leaves behind at most a LISTEN on a channel that gets no notifications
// but the one check, and no settings. The store channels are LISTENed by
// serve.
func (h *hub) open(ctx context.Context) (*pgx.Conn, error) {
	l, lease := h.checker()
	if l == nil {
		return nil, errors.New("no listener left")
	}
	ctx, cancel := context.WithTimeout(ctx, lease+2*verifyTimeout)
	defer cancel()
	cctx, ccancel := context.WithTimeout(ctx, lease)
	defer ccancel()
	conn, err := h.connect(cctx)
	if err != nil {
		return nil, err
	}
	check := pgx.Identifier{"pgsession_check_" + h.id}.Sanitize()
	if _, err := conn.Exec(cctx, "LISTEN "+check); err != nil {
		closeConn(conn)
		return nil, err
	}
	if err := h.check(ctx, conn, l, min(lease, verifyTimeout)); err != nil {
		closeConn(conn)
		return nil, err
	}
	if err := h.prepare(cctx, conn, check); err != nil {
		closeConn(conn)
		return nil, err
	}
	return conn, nil
}

// check sends a notification through l's pool on the hub's check channel
// and waits for conn to hear it.
func (h *hub) check(ctx context.Context, conn *pgx.Conn, l *listener, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var nonce [8]byte
	_, _ = crand.Read(nonce[:])
	payload := "check " + hex.EncodeToString(nonce[:])
	channel := "pgsession_check_" + h.id
	if _, err := l.send(ctx, channel, payload); err != nil {
		return fmt.Errorf("send a check notification through the pool: %w", err)
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded) {
				return notHeard(channel, wait)
			}
			return err
		}
		if n.Payload == payload {
			return nil
		}
	}
}

// notHeard is the error of a listening connection that does not hear what
// the pool notifies.
func notHeard(channel string, wait time.Duration) error {
	return fmt.Errorf("%w: a notification sent through the pool on channel %q did not reach the listening connection within %v. "+
		"Likely causes: the pool goes through PgBouncer in transaction or statement mode and ListenConnString is not set "+
		"(point it at PostgreSQL directly or at a session-mode pool); ListenConnString names another database or server "+
		"than the pool; the listening connection is on a read-only standby", ErrNotHeard, channel, wait)
}

func (h *hub) prepare(ctx context.Context, conn *pgx.Conn, check string) error {
	if _, err := conn.Exec(ctx, "UNLISTEN "+check); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "SELECT set_config('application_name', $1, false)", h.applicationName()); err != nil {
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
	return nil
}

// applicationName is the listening connection's application_name.
func (h *hub) applicationName() string { return "pgsession listener " + h.id }

// serve LISTENs on the listeners' channels and hands out notifications
// until the connection fails or ctx ends.
//
// It waits without a context of its own, since a context with a deadline
// costs a timer and a watching goroutine per notification, and every write
// of the process's stores is echoed here. The connection is closed under
// it instead: when ctx ends, or by hangUp. A change of channels interrupts
// the wait with a past read deadline (wakeLocked).
func (h *hub) serve(ctx context.Context, conn *pgx.Conn) error {
	netConn := conn.PgConn().Conn()
	stop := context.AfterFunc(ctx, func() { _ = netConn.Close() })
	defer stop()
	h.mu.Lock()
	h.conn = conn
	h.gen++
	h.dirty = true
	h.mu.Unlock()
	for {
		if err := h.sync(ctx, conn); err != nil {
			return err
		}
		n, err := conn.WaitForNotification(context.Background())
		h.mu.Lock()
		woke := h.woke
		h.waiting, h.woke = false, false
		h.mu.Unlock()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ne net.Error
			if woke && errors.As(err, &ne) && ne.Timeout() {
				continue // a wake: sync clears the deadline
			}
			return err
		}
		for _, l := range (*h.byChan.Load())[n.Channel] {
			l.deliver(n.Payload)
		}
	}
}

// sync LISTENs and UNLISTENs until the connection listens on exactly the
// listeners' channels, tells each listener whose channel it now hears, and
// marks the reader waiting. Nobody sets a read deadline while it runs.
func (h *hub) sync(ctx context.Context, conn *pgx.Conn) error {
	if err := conn.PgConn().Conn().SetReadDeadline(time.Time{}); err != nil {
		return err
	}
	for {
		h.mu.Lock()
		if !h.dirty {
			h.waiting = true
			h.mu.Unlock()
			return nil
		}
		h.dirty = false
		var add, drop []string
		for c := range h.channels {
			if !h.listened[c] {
				add = append(add, c)
			}
		}
		for c := range h.listened {
			if h.channels[c] == 0 {
				// Not heard from now on: a listener joining meanwhile
				// waits for the LISTEN that follows.
				drop = append(drop, c)
				delete(h.listened, c)
			}
		}
		h.mu.Unlock()
		for _, c := range add {
			if err := h.exec(ctx, conn, "LISTEN "+pgx.Identifier{c}.Sanitize()); err != nil {
				return err
			}
			h.mu.Lock()
			h.listened[c] = true
			for l := range h.subs {
				if l.channel == c {
					l.listening(h.gen)
				}
			}
			h.mu.Unlock()
		}
		for _, c := range drop {
			if err := h.exec(ctx, conn, "UNLISTEN "+pgx.Identifier{c}.Sanitize()); err != nil {
				return err
			}
		}
	}
}

// exec runs a statement on the listening connection, bounded.
func (h *hub) exec(ctx context.Context, conn *pgx.Conn, sql string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*verifyTimeout)
	defer cancel()
	_, err := conn.Exec(ctx, sql)
	return err
}

// listenConnector returns the function that opens the listening
// connection: from connString when set, else a connection taken from the
// pool and hijacked. Hijacked, it is the hub's own: the pool will not hand
// it to anyone else (who would inherit the LISTEN) nor close it at its
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
