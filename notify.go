package pgsession

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Invalidation messages.
//
// Every write and delete sends, in its own transaction, a notification on
// the store's channel. The payload is text:
//
//	1 <origin> <key>:<version> [<key>:<version> ...]
//
// where 1 is the format version, origin identifies the sending Store, key
// is the hex SHA-256 key of a session (never its token) and version is the
// row version the write produced, or 0 for a delete. A list longer than one
// payload may carry is split (see payloads).

// maxPayload is the largest notification payload PostgreSQL accepts
// (8000 bytes fails with "payload string too long").
const maxPayload = 7999

const payloadFormat = "1"

// invalidation is one item of a notification.
type invalidation struct {
	key     keyHash
	version int64 // 0: deleted
	all     bool  // every session was deleted (Clear): key and version unused
}

// clearItem is the payload item of an invalidation of everything.
const clearItem = "*"

// payloads renders items as notification payloads of at most maxPayload
// bytes each.
func payloads(origin string, items []invalidation) []string {
	prefix := payloadPrefix(origin)
	var out []string
	var b strings.Builder
	for _, it := range items {
		item := clearItem
		if !it.all {
			item = hex.EncodeToString(it.key[:]) + ":" + strconv.FormatInt(it.version, 10)
		}
		if b.Len() > 0 && b.Len()+1+len(item) > maxPayload {
			out = append(out, b.String())
			b.Reset()
		}
		if b.Len() == 0 {
			b.WriteString(prefix)
		} else {
			b.WriteByte(' ')
		}
		b.WriteString(item)
	}
	if b.Len() > 0 {
		out = append(out, b.String())
	}
	return out
}

// payloadPrefix is what every payload from origin starts with; the SQL
// that writes a single session appends "<key>:<version>" to it.
func payloadPrefix(origin string) string { return payloadFormat + " " + origin + " " }

var errBadPayload = errors.New("malformed invalidation payload")

// parsePayload parses a notification payload. It never panics; anything
// that is not a well-formed payload is an error.
func parsePayload(p string) (origin string, items []invalidation, err error) {
	f := strings.Fields(p)
	if len(f) < 3 || f[0] != payloadFormat || len(f[1]) == 0 || len(f[1]) > 64 {
		return "", nil, errBadPayload
	}
	items = make([]invalidation, 0, len(f)-2)
	for _, s := range f[2:] {
		if s == clearItem {
			items = append(items, invalidation{all: true})
			continue
		}
		h, v, ok := strings.Cut(s, ":")
		var it invalidation
		if !ok || len(h) != 2*len(it.key) {
			return "", nil, errBadPayload
		}
		if _, err := hex.Decode(it.key[:], []byte(h)); err != nil {
			return "", nil, errBadPayload
		}
		if it.version, err = strconv.ParseInt(v, 10, 64); err != nil || it.version < 0 {
			return "", nil, errBadPayload
		}
		items = append(items, it)
	}
	return f[1], items, nil
}

// defaultChannel derives the notification channel from the table's names:
// lower case (LISTEN folds unquoted names, pg_notify does not), and short
// enough to be an identifier.
func defaultChannel(schema, table string) string {
	name := "pgsession:" + table
	if schema != "" {
		name = "pgsession:" + schema + "." + table
	}
	name = strings.ToLower(name)
	if len(name) > maxIdentifierLen {
		sum := sha256.Sum256([]byte(name))
		name = name[:maxIdentifierLen-17] + "~" + hex.EncodeToString(sum[:8])
	}
	return name
}

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

// Reconnect backoff of the listener.
const (
	backoffMin = 250 * time.Millisecond
	backoffMax = 30 * time.Second
)

// handoffSize is how many notifications may wait between the read loop and
// the goroutine that applies them. A variable only so that a test can
// overflow it.
var handoffSize = 4096

// applyHook, when not nil, runs before each notification is applied: a test
// seam to hold the applier back.
var applyHook func()

// listener keeps one dedicated connection LISTENing on the store's channel
// and applies the invalidations that arrive to the cache. Its states:
//
//   - UP: notifications evict entries older than the notified version. The
//     cache serves only while the connection proved itself alive (a
//     notification, or a ping after a quiet wait) within the lease.
//   - DOWN, on any error: reads bypass the cache at once. Reconnect with
//     backoff, LISTEN, then drop the whole cache (notifications sent while
//     down are lost), then UP.
type listener struct {
	s       *Store
	channel string
	origin  string
	lease   time.Duration
	wait    time.Duration // quiet time before a ping

	state     atomic.Int32 // ListenerState
	lastProof atomic.Int64 // monotonic ns (since base) of the last proof of life
	downSince atomic.Int64 // monotonic ns (since base) the current outage began
	downTotal atomic.Int64 // ns spent DOWN in finished outages
	base      time.Time    // origin of the monotonic ns above

	handoff chan string // payloads from the read loop to apply
}

func newListener(s *Store, origin string) *listener {
	l := &listener{
		s:       s,
		channel: s.cfg.Channel,
		origin:  origin,
		lease:   s.cfg.ListenLease,
		wait:    s.cfg.ListenLease / 4,
		base:    time.Now(),
		handoff: make(chan string, handoffSize),
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
		l.s.cache.drop()
		l.s.counters.drops.Add(1)
		l.downTotal.Add(l.mono() - l.downSince.Load())
	}
	l.proof()
	l.state.Store(int32(ListenerUp))
}

// connect opens the dedicated connection and LISTENs on it.
func (l *listener) connect(ctx context.Context) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, l.lease)
	defer cancel()
	var conn *pgx.Conn
	if cs := l.s.cfg.ListenConnString; cs != "" {
		cc, err := pgx.ParseConfig(cs)
		if err != nil {
			return nil, fmt.Errorf("parse ListenConnString: %w", err)
		}
		if conn, err = pgx.ConnectConfig(ctx, cc); err != nil {
			return nil, err
		}
	} else {
		pc, err := l.s.pool.Acquire(ctx)
		if err != nil {
			return nil, err
		}
		// Hijacked, the connection is ours: the pool will not hand it to
		// anyone else (who would inherit the LISTEN) nor close it at its
		// MaxConnLifetime.
		conn = pc.Hijack()
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
			l.s.log.Warn("pgsession: listener lost; reads bypass the cache until it is back", "channel", l.channel, "err", err)
		}
		// Full jitter over the upper half, so a fleet does not reconnect in step.
		d := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		c, err := l.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			backoff = min(2*backoff, backoffMax)
			l.s.log.Warn("pgsession: listener reconnect failed", "channel", l.channel, "retry_in", backoff, "err", err)
			continue
		}
		conn, backoff = c, backoffMin
		l.s.counters.reconnects.Add(1)
		l.setUp(false)
		l.s.log.Info("pgsession: listener reconnected; cache dropped", "channel", l.channel)
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
				l.s.cache.drop()
				l.s.counters.drops.Add(1)
				l.s.log.Warn("pgsession: invalidations arrive faster than they are applied; cache dropped", "channel", l.channel)
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
		if applyHook != nil {
			applyHook()
		}
		l.s.counters.notifications.Add(1)
		origin, items, err := parsePayload(p)
		if err != nil {
			l.s.counters.badNotifications.Add(1)
			l.s.log.Warn("pgsession: ignored a malformed notification", "channel", l.channel, "payload_len", len(p))
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
					l.s.cache.drop()
					l.s.counters.drops.Add(1)
				}
				continue
			}
			if l.s.cache.invalidate(it.key, it.version) && !own {
				l.s.counters.evictions.Add(1)
			}
		}
	}
}
