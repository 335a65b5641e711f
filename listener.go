package pgsession

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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

// listener serves one Store: it applies the invalidations that arrive on
// the store's channel to its cache, and proves that the path from the
// store's pool to the listening connection works. The connection itself is
// its hub's (hub.go), shared with the other Stores of the process on the
// same pool. It knows nothing of the Store: it is given the cache, the
// counters, a logger and a function that sends a notification the way the
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
//   - DOWN, on any error: reads bypass the cache at once. The hub
//     reconnects with backoff and LISTENs; the listener probes at once, and
//     when it hears a probe sent after the LISTEN took effect it drops the
//     whole cache (notifications sent while down are lost), then is UP.
type listener struct {
	channel  string
	origin   string // this store's id: its own writes' echoes carry it
	lease    time.Duration
	wait     time.Duration // quiet time before a ping
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

	hub *hub // the shared connection; set by joinHub

	mu         sync.Mutex    // protects the fields below, and the state's changes to UP
	listenedAt int64         // mono ns the hub's LISTEN on the channel took effect on its current connection; 0: not listening
	gen        uint64        // the hub connection that LISTEN is on
	everUp     bool          // the listener was UP before: the next UP follows an outage
	upOnce     chan struct{} // closed at the first UP
	stopped    bool          // stop ran: handoff is closed

	kick    chan struct{} // asks the prober for a probe now
	heard   chan struct{} // signalled by listening, for start
	handoff chan string   // payloads from the read loop to apply

	ownPrefix   string        // what this store's own notifications start with
	probePrefix string        // what this listener's own probes start with
	queueUsage  atomic.Uint64 // float64 bits: pg_notification_queue_usage() at the last probe

	echoes echoes // deletes waiting to hear their own notification

	inOutage atomic.Bool // an outage was logged and has not ended

	delivered atomic.Int64 // mono ns sent of the latest own probe the hub's reader handed over
}

// deliveredLately reports whether the hub's reader handed over one of this
// listener's probes within the lease, on the current connection.
func (l *listener) deliveredLately() bool {
	l.mu.Lock()
	since := l.listenedAt
	l.mu.Unlock()
	d := l.delivered.Load()
	return since > 0 && d >= since && l.mono()-d < int64(l.lease)
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
		send:     c.send,
		cache:    c.cache,
		counters: c.counters,
		log:      c.log,
		hook:     c.hook,
		base:     time.Now(),
		handoff:  make(chan string, c.handoff),
		kick:     make(chan struct{}, 1),
		heard:    make(chan struct{}, 1),
		upOnce:   make(chan struct{}),
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
func (l *listener) alive() bool { return l.aliveAt(l.mono()) }

// aliveAt is alive at mono, a monotonic time (since base) just read.
func (l *listener) aliveAt(mono int64) bool {
	return ListenerState(l.state.Load()) == ListenerUp && mono-l.lastProof.Load() < int64(l.lease)
}

// proofAt records a probe sent at mono time sent as heard: the path from
// the pool to the listener worked at that time. A probe sent after the
// LISTEN took effect on the hub's current connection brings a DOWN
// listener UP.
func (l *listener) proofAt(sent int64) {
	if sent > l.mono() {
		return // not a time this listener sent
	}
	for {
		last := l.lastProof.Load()
		if sent <= last || l.lastProof.CompareAndSwap(last, sent) {
			break
		}
	}
	if ListenerState(l.state.Load()) != ListenerUp {
		l.mu.Lock()
		if l.listenedAt > 0 && sent >= l.listenedAt && !l.stopped {
			l.setUpLocked()
		}
		l.mu.Unlock()
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

// setUpLocked marks the listener UP. After an outage everything cached
// may have missed notifications, so the cache is dropped first: LISTEN,
// hear a probe sent after it, drop, then serve.
func (l *listener) setUpLocked() {
	if l.everUp {
		l.cache.drop()
		l.counters.drops.Add(1)
		l.counters.reconnects.Add(1)
		l.downTotal.Add(l.mono() - l.downSince.Load())
	}
	l.state.Store(int32(ListenerUp))
	if l.everUp {
		l.outageEnds("listener reconnected, cache dropped")
	} else {
		l.everUp = true
		close(l.upOnce)
	}
}

// listening is called by the hub, under its lock, when its LISTEN on the
// channel took effect on connection gen: a probe sent from now on proves
// the listener. It asks the prober for one at once.
func (l *listener) listening(gen uint64) {
	l.mu.Lock()
	l.listenedAt, l.gen = l.mono(), gen
	l.mu.Unlock()
	for _, c := range []chan struct{}{l.kick, l.heard} {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

// lost is called by the hub, under its lock, when its connection ended:
// reads bypass the cache at once.
func (l *listener) lost() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.listenedAt = 0
	l.setDown()
}

// lostLogged says, once per outage, that the connection was lost. The hub
// calls it without its lock: the logger is the user's.
func (l *listener) lostLogged(err error) {
	l.mu.Lock()
	up := l.everUp && !l.stopped
	l.mu.Unlock()
	if up {
		l.outageBegins("listener lost", "err", err)
	}
}

// start joins the process's hub for pool and connString and waits until
// the listener heard a probe of its own, within the lease and
// verifyTimeout, or the hub's connection attempt failed. The prober and
// the applier must be running. On failure the listener has left the hub.
func (l *listener) start(ctx context.Context, pool *pgxpool.Pool, connString string) error {
	h, joined, err := joinHub(l, pool, connString)
	if err != nil {
		return err
	}
	bound := time.NewTimer(l.lease + 2*verifyTimeout)
	defer bound.Stop()
	// heard runs from each LISTEN on the channel: a reconnect during
	// start-up starts it over.
	heard := time.NewTimer(time.Hour)
	heard.Stop()
	defer heard.Stop()
	for {
		failed := h.failures()
		if err = h.failedSince(joined); err != nil {
			h.leave(l)
			return err
		}
		select {
		case <-l.heard:
			heard.Reset(min(l.lease, verifyTimeout))
			continue
		case <-l.upOnce:
			return nil
		case <-ctx.Done():
			err = ctx.Err()
		case <-failed:
			// Only an attempt begun after this listener joined counts.
			if err = h.failedSince(joined); err == nil {
				continue
			}
		case <-heard.C:
			err = notHeard(l.channel, min(l.lease, verifyTimeout))
		case <-bound.C:
			if err = h.failedSince(joined); err == nil {
				err = fmt.Errorf("no listening connection within %v: an attempt to connect is still under way", l.lease+2*verifyTimeout)
			}
		}
		h.leave(l)
		return err
	}
}

// stop leaves the hub and ends the applier. Nothing is handed off after
// it; an echo of the store's own write that the hub's reader is delivering
// right now may still evict from its cache, which is harmless.
func (l *listener) stop() {
	if l.hub != nil {
		l.hub.leave(l)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.stopped {
		l.stopped = true
		l.setDown()
		close(l.handoff)
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

// deliver takes one notification from the hub's reader; it never blocks.
//
// This store's own echoes are applied here, not handed off: they are most
// of the traffic, cheap to apply, and order does not matter, since every
// invalidation only evicts what is older than the version it names. Its
// probes go in order with the others' invalidations, so that a probe
// proves the listener alive only once everything heard before it is
// applied.
func (l *listener) deliver(p string) {
	if strings.HasPrefix(p, l.ownPrefix) && !strings.HasPrefix(p, l.probePrefix) {
		l.applyPayload(p)
		return
	}
	// A probe that brings the listener UP needs nothing applied before it:
	// the cache is empty (New) or is dropped as it comes UP.
	if sent, ok := l.ownProbe(p); ok {
		if sent <= l.mono() && sent > l.delivered.Load() {
			l.delivered.Store(sent) // only the reader stores it
		}
		if ListenerState(l.state.Load()) != ListenerUp {
			l.proofAt(sent)
			return
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return
	}
	select {
	case l.handoff <- p:
	default:
		// Better to forget everything than to miss one invalidation.
		l.cache.drop()
		l.counters.drops.Add(1)
		l.log.Warn("pgsession: invalidations arrive faster than they are applied; cache dropped", "channel", l.channel)
		if sent, ok := l.ownProbe(p); ok {
			// The drop above forgot everything that was waiting, so this
			// probe proves as much as if it had been applied in order.
			l.mu.Unlock()
			l.proofAt(sent)
			l.mu.Lock()
		}
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
		case <-l.kick: // the hub LISTENs anew: prove it at once
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
		l.mu.Lock()
		gen, since := l.gen, l.listenedAt
		l.mu.Unlock()
		switch up := ListenerState(l.state.Load()) == ListenerUp; {
		case up && !l.alive():
			l.outageBegins("listener heard no probe within the lease", "lease", l.lease, "probe_err", probeErr)
			// Silently dead, or deaf: start over with a connection that
			// proves it hears.
			l.hub.hangUp(gen, l)
		case !up && since > 0 && l.mono()-since > int64(l.lease):
			// LISTENing a whole lease and never heard a probe.
			l.hub.hangUp(gen, l)
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
