package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgsession/pgsession"
)

// The scale envelope (issue 15): how far one PostgreSQL goes, in writes,
// in listening instances and in cache-miss reads, in each coherence mode.
//
// One table. Two writing Stores on it, one per coherence mode
// (CoherenceAll: every save notifies; CoherenceRevocations: saves do not,
// logouts do), each with its cache off (so no listener of its own) and
// group commit at the default MaxBatch, share a pool of 3. N listening
// Stores in this process stand for N instances: each has a
// ListenConnString of its own (the database URL with its own
// application_name), so that each keeps a listening connection of its own
// also where the Stores of one process share one listener, as separate
// processes would.
//
// Every round sweeps the counts from the smallest to the largest, opening
// listening Stores as it goes, and closes them down to the smallest count
// at the end, so that the ratio of a count to the smallest is taken within
// one sweep. At each count both modes are measured, one after the other,
// the order alternating: the write throughput of the writers (each saving
// its own session, changed, over and over), CPU per save in this process
// and in the server, then a few samples of the invalidation latency to one
// listener, with nothing else writing: in CoherenceAll the save's own
// invalidation, in CoherenceRevocations a logout's, as saves are not
// notified there. At the smallest count, also cache-miss reads: a Store
// with its cache off (every Get a Load through the pool) read by several
// goroutines, sessions chosen in turn among many.
//
// Connections: a count larger than what the server takes (max_connections
// minus the client connections open at the start, minus this scenario's
// own pools and envelopeSpare left for everyone else) is lowered to that,
// and the report says so; if the server refuses a listener anyway (other
// clients took the room meanwhile), the sweep stays at what it has.

// envelopeOwnConns is what the scenario holds besides the listeners' own
// connections: the writers' pool (3) and the listening Stores' pool (1,
// for New's checks). The read pool is open only at the smallest count.
const envelopeOwnConns = 4

// envelopeSpare is how many connections the largest count leaves free
// for other clients of the server (other tests, the suite's shared pool).
const envelopeSpare = 10

// The latency sample's write in each mode.
const (
	notifiedChange = "change"
	notifiedLogout = "logout"
)

var envelopeModes = []pgsession.Coherence{pgsession.CoherenceAll, pgsession.CoherenceRevocations}

type envelopeOptions struct {
	counts   []int
	writers  int
	readers  int
	sessions int // sessions the cache-miss readers read in turn
	duration time.Duration
	repeats  int
	samples  int // invalidation latency samples per mode and count, over all rounds
}

// envelopePoint is one mode at one requested listener count.
type envelopePoint struct {
	Mode      string
	Requested int                // listeners asked for
	Listeners []int              // listeners open, per round
	PerSec    []float64          // saves per second, per round
	Ratio     []float64          // per round: saves/s over the same round's at the smallest count
	CPU       []cpuPerOp         // CPU per save, this process and the server, per round
	Notices   []float64          // per round: notifications the first listener received per save
	Others    []time.Duration    // per round: CPU per save of the server's other processes (other clients' backends), -1 if unknown
	Notified  string             // what the latency samples wrote: a change or a logout
	Latency   invalidationResult // writer -> one listener, over all rounds

	samples evictionSamples
}

func (p *envelopePoint) median() float64 { return median(p.PerSec) }
func (p *envelopePoint) ratio() float64  { return median(p.Ratio) }

// listeners is the fewest listeners the point had in any round.
func (p *envelopePoint) listeners() int {
	if len(p.Listeners) == 0 {
		return 0
	}
	return slices.Min(p.Listeners)
}

// envelopeIdle is what N listening Stores cost with nothing written: their
// probes, and the pings of a quiet listener.
type envelopeIdle struct {
	Requested int
	Listeners []int      // per round
	CPU       []cpuPerOp // CPU per second of wall time, this process and the server, per round
}

// envelopeReads is cache-miss reads through one pool.
type envelopeReads struct {
	Readers   int
	PoolConns int
	Sessions  int
	PerSec    []float64  // Loads per second, per round
	CPU       []cpuPerOp // CPU per load, per round
}

func (r *envelopeReads) median() float64 { return median(r.PerSec) }

type envelopeResult struct {
	Modes          []string
	Points         []*envelopePoint // by count, then mode
	Idle           []*envelopeIdle  // by count
	Reads          envelopeReads
	Writers        int
	MaxBatch       int
	MaxConnections int
	Free           int  // client connections free at the start
	Limit          int  // most listeners the scenario would open
	OwnServerCPU   bool // server CPU is this run's backends and the server's background processes, not every postgres process
	Spare          int
	Duration       time.Duration
	Repeats        int
}

func (r *envelopeResult) point(mode string, requested int) *envelopePoint {
	if r == nil {
		return nil
	}
	for _, p := range r.Points {
		if p.Mode == mode && p.Requested == requested {
			return p
		}
	}
	return nil
}

// counts returns the requested counts, in order.
func (r *envelopeResult) counts() []int {
	if r == nil {
		return nil
	}
	var ns []int
	for _, p := range r.Points {
		if !slices.Contains(ns, p.Requested) {
			ns = append(ns, p.Requested)
		}
	}
	return ns
}

// at returns the point of mode whose listeners were n, or the nearest
// below it: the point a goal "at n listeners" is judged on.
func (r *envelopeResult) at(mode string, n int) *envelopePoint {
	if r == nil {
		return nil
	}
	var best *envelopePoint
	for _, p := range r.Points {
		if p.Mode == mode && p.listeners() <= n && (best == nil || p.listeners() > best.listeners()) {
			best = p
		}
	}
	return best
}

// listenConnString is base with application_name set to name: a connection
// string of its own for each listening Store.
func listenConnString(base, name string) string {
	if u, err := url.Parse(base); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		q.Set("application_name", name)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return base + " application_name=" + name // keyword/value form
}

func runEnvelope(ctx context.Context, e *env, o envelopeOptions, pr progress) (_ *envelopeResult, err error) {
	free, maxConns, err := e.freeConnections(ctx)
	if err != nil {
		return nil, err
	}
	res := &envelopeResult{Writers: o.writers, MaxBatch: pgsession.DefaultMaxBatch, MaxConnections: maxConns, Free: free,
		Spare: envelopeSpare, Duration: o.duration, Repeats: o.repeats}
	for _, m := range envelopeModes {
		res.Modes = append(res.Modes, m.String())
	}
	res.Limit = free - envelopeOwnConns - envelopeSpare
	if res.Limit < 1 {
		return nil, fmt.Errorf("the server takes %d more connections, too few to run even one listener and leave %d to others", free, envelopeSpare)
	}

	writerPool, err := e.newPool(ctx, 3, nil)
	if err != nil {
		return nil, err
	}
	defer writerPool.Close()
	listenPool, err := e.newPool(ctx, 1, nil)
	if err != nil {
		return nil, err
	}
	defer listenPool.Close()

	table := uniqueName("envelope")
	writers := map[string]*pgsession.Store{}
	for _, m := range envelopeModes {
		cfg := pgsession.Config{Table: table, CacheSize: -1, PurgeInterval: -1, Coherence: m}
		if len(writers) > 0 {
			cfg.SkipCreateTable = true
		}
		s, _, err := newPgsession(ctx, e, writerPool, cfg)
		if err != nil {
			return nil, err
		}
		if len(writers) == 0 {
			defer func() { err = errors.Join(err, e.dropTable(table)) }()
		}
		defer s.Close()
		writers[m.String()] = s
	}
	if err := warm(ctx, writerPool, 3); err != nil {
		return nil, err
	}

	// Each mode's writers save sessions of their own; the CoherenceAll
	// latency samples change a few more.
	load := map[string][]*writerSession{}
	var probe []*writerSession
	for _, m := range res.Modes {
		for i := range o.writers + 8 {
			w, err := newWriterSession(ctx, writers[m], payloadSmall)
			if err != nil {
				return nil, err
			}
			switch {
			case i < o.writers:
				load[m] = append(load[m], w)
			case m == pgsession.CoherenceAll.String():
				probe = append(probe, w)
			}
		}
	}
	// The sessions of the cache-miss reads.
	var reads []string
	for range o.sessions {
		w, err := newWriterSession(ctx, writers[res.Modes[0]], payloadSmall)
		if err != nil {
			return nil, err
		}
		reads = append(reads, w.cookie)
	}
	res.Reads = envelopeReads{Readers: o.readers, PoolConns: o.readers, Sessions: o.sessions}

	var listeners []*pgsession.Store
	closeDownTo := func(n int) {
		for len(listeners) > n {
			_ = listeners[len(listeners)-1].Close()
			listeners = listeners[:len(listeners)-1]
		}
	}
	defer closeDownTo(0)
	// grow opens listening Stores up to n, or as many as the server takes.
	grow := func(n int) error {
		for len(listeners) < n {
			i := len(listeners) + 1
			s, _, err := newPgsession(ctx, e, listenPool, pgsession.Config{
				Table: table, SkipCreateTable: true, PurgeInterval: -1, ScavengeInterval: -1,
				ListenConnString: listenConnString(e.dbURL, fmt.Sprintf("pgsbench_listener_%d", i)),
			})
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "53300" && len(listeners) > 0 {
				// Something else took the connections meanwhile: stay at
				// what the server still took.
				pr.printf("envelope: the server refused listener %d (%s): staying at %d", i, pgErr.Message, len(listeners))
				res.Limit = len(listeners)
				return nil
			}
			if err != nil {
				return fmt.Errorf("listener %d: %w", i, err)
			}
			listeners = append(listeners, s)
		}
		return nil
	}

	// Warm both writers and the paths (statements prepared, plans).
	if err := grow(1); err != nil {
		return nil, err
	}
	for _, m := range res.Modes {
		if _, err := timeParallel(max(o.duration/2, 50*time.Millisecond), o.writers, func(i int) error { return load[m][i].change(ctx) }); err != nil {
			return nil, fmt.Errorf("%s: warm-up: %w", m, err)
		}
	}

	perRound := max((o.samples+o.repeats-1)/o.repeats, 1)
	for round := range o.repeats {
		for ci, want := range o.counts {
			if err := grow(min(want, res.Limit)); err != nil {
				return nil, err
			}
			n := len(listeners)
			// Alternate which mode goes first, by round and by count.
			order := slices.Clone(res.Modes)
			if (round+ci)%2 == 1 {
				slices.Reverse(order)
			}
			// Opening and closing dozens of Stores has after-effects (new
			// connections' first round trips, backends exiting, garbage):
			// let them pass in a short unmeasured cell of each mode, and
			// collect the garbage now rather than during a cell.
			for _, m := range order {
				if _, err := timeParallel(o.duration/4, o.writers, func(i int) error { return load[m][i].change(ctx) }); err != nil {
					return nil, fmt.Errorf("%s, %d listeners: settling: %w", m, n, err)
				}
			}
			runtime.GC()
			// The listening Stores must hold a connection each, as separate
			// processes would, not share one.
			if conns, err := e.listeningConns(ctx); err != nil {
				return nil, err
			} else if conns >= 0 && conns != n {
				return nil, fmt.Errorf("%d listening Stores hold %d listening connections, want one each", n, conns)
			}
			if err := measureIdle(ctx, e, res, want, n, o.duration); err != nil {
				return nil, err
			}
			for _, m := range order {
				pt := res.point(m, want)
				if pt == nil {
					pt = &envelopePoint{Mode: m, Requested: want, Notified: notifiedChange}
					if m != pgsession.CoherenceAll.String() {
						pt.Notified = notifiedLogout
					}
					res.Points = append(res.Points, pt)
				}
				pr.printf("envelope: round %d/%d, %d listeners, %s: throughput", round+1, o.repeats, n, m)
				share, err := e.ownServerShare(ctx)
				if err != nil {
					return nil, err
				}
				res.OwnServerCPU = share.own
				heard := listeners[0].Stats().Notifications
				cpu0, all0, ok0 := share.take()
				t, err := timeParallel(o.duration, o.writers, func(i int) error { return load[m][i].change(ctx) })
				if err != nil {
					return nil, fmt.Errorf("%s, %d listeners: %w", m, n, err)
				}
				cpu1, all1, ok1 := share.take()
				cpu := cpu0.perOp(cpu1, t.ops)
				others := time.Duration(-1)
				if ok0 && ok1 && share.own && cpu.Server >= 0 {
					others = max((all1-all0)/time.Duration(max(t.ops, 1))-cpu.Server, 0)
				}
				pt.Others = append(pt.Others, others)
				pt.Notices = append(pt.Notices, float64(listeners[0].Stats().Notifications-heard)/float64(max(t.ops, 1)))
				pt.Listeners = append(pt.Listeners, n)
				pt.PerSec = append(pt.PerSec, t.perSecond())
				pt.CPU = append(pt.CPU, cpu)
				if base := res.point(m, o.counts[0]); base != nil && len(base.PerSec) == round+1 {
					pt.Ratio = append(pt.Ratio, t.perSecond()/base.PerSec[round])
				}
			}
			for _, m := range order {
				pt := res.point(m, want)
				trial := changeTrial(ctx, probe, listeners[0])
				if pt.Notified == notifiedLogout {
					trial = logoutEviction(ctx, writers[m], listeners[0])
				}
				if err := collectEvictions(ctx, listeners[0], perRound, nil, trial, &pt.samples); err != nil {
					return nil, fmt.Errorf("%s, %d listeners: latency: %w", m, n, err)
				}
			}
			if ci == 0 {
				pr.printf("envelope: round %d/%d: cache-miss reads, %d readers", round+1, o.repeats, o.readers)
				if err := measureMisses(ctx, e, table, reads, o, &res.Reads); err != nil {
					return nil, fmt.Errorf("cache-miss reads: %w", err)
				}
			}
			for i, s := range listeners {
				if st := s.Stats(); st.Listener != pgsession.ListenerUp || st.Notifications == 0 {
					return nil, fmt.Errorf("listener %d is %v and received %d notifications", i+1, st.Listener, st.Notifications)
				}
			}
		}
		closeDownTo(min(o.counts[0], len(listeners)))
	}
	for _, pt := range res.Points {
		pt.Latency = pt.samples.result()
	}
	return res, nil
}

// measureIdle measures, with n listeners open and nothing written for d,
// CPU per second in this process and the server.
func measureIdle(ctx context.Context, e *env, res *envelopeResult, want, n int, d time.Duration) error {
	var idle *envelopeIdle
	for _, p := range res.Idle {
		if p.Requested == want {
			idle = p
		}
	}
	if idle == nil {
		idle = &envelopeIdle{Requested: want}
		res.Idle = append(res.Idle, idle)
	}
	share, err := e.ownServerShare(ctx)
	if err != nil {
		return err
	}
	cpu0, _, _ := share.take()
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
	}
	cpu1, _, _ := share.take()
	// CPU per second: per op with an op a millisecond, times 1000.
	c := cpu0.perOp(cpu1, max(time.Since(t0).Milliseconds(), 1))
	for _, p := range []*time.Duration{&c.Client, &c.Server} {
		if *p >= 0 {
			*p *= 1000
		}
	}
	idle.Listeners = append(idle.Listeners, n)
	idle.CPU = append(idle.CPU, c)
	return nil
}

// logoutEviction readies samples that log out a new session, written by
// writer, after reader cached it.
func logoutEviction(ctx context.Context, writer, reader *pgsession.Store) evictionTrial {
	return func(int) (func() error, error) {
		w, err := newWriterSession(ctx, writer, payloadSmall)
		if err != nil {
			return nil, err
		}
		if err := w.readWith(ctx, reader); err != nil {
			return nil, fmt.Errorf("reader: %w", err)
		}
		return func() error { return w.logout(ctx) }, nil
	}
}

// measureMisses runs one round of cache-miss reads: a Store with its cache
// off, on a pool of its own, read by o.readers goroutines, each taking the
// sessions' cookies in turn. Every Get is a Load; the round is checked to
// have loaded once per Get.
func measureMisses(ctx context.Context, e *env, table string, cookies []string, o envelopeOptions, into *envelopeReads) error {
	pool, err := e.newPool(ctx, o.readers, nil)
	if err != nil {
		return err
	}
	defer pool.Close()
	s, _, err := newPgsession(ctx, e, pool, pgsession.Config{Table: table, SkipCreateTable: true, CacheSize: -1, PurgeInterval: -1})
	if err != nil {
		return err
	}
	defer s.Close()
	if err := warm(ctx, pool, o.readers); err != nil {
		return err
	}
	reqs := make([]*http.Request, len(cookies))
	for i, c := range cookies {
		r := httptest.NewRequest(http.MethodGet, "http://example.com/", nil).WithContext(ctx)
		r.AddCookie(&http.Cookie{Name: sessionName, Value: c})
		reqs[i] = r
	}
	next := make([]int, o.readers)
	get := func(w int) error {
		i := (w + next[w]*o.readers) % len(reqs)
		next[w]++
		r := new(http.Request)
		*r = *reqs[i] // a fresh request: gorilla's registry caches sessions per request
		sess, err := s.Get(r, sessionName)
		if err != nil {
			return err
		}
		if sess.IsNew {
			return errors.New("a read found no session")
		}
		return nil
	}
	// Warm the pool's connections (statements prepared).
	if _, err := timeParallel(10*time.Millisecond, o.readers, get); err != nil {
		return err
	}
	share, err := e.ownServerShare(ctx)
	if err != nil {
		return err
	}
	l0 := s.Stats().Loads
	cpu0, _, _ := share.take()
	t, err := timeParallel(o.duration, o.readers, get)
	if err != nil {
		return err
	}
	cpu1, _, _ := share.take()
	cpu := cpu0.perOp(cpu1, t.ops)
	if loads := s.Stats().Loads - l0; loads != t.ops {
		return fmt.Errorf("%d Gets made %d Loads, want one each", t.ops, loads)
	}
	into.PerSec = append(into.PerSec, t.perSecond())
	into.CPU = append(into.CPU, cpu)
	return nil
}

// envelopeTable is the table of the README's "How far one PostgreSQL
// goes": per mode, at the smallest count, 50 listeners (or the nearest
// below) and the largest count, the sessions written per second, their
// ratio to the smallest count, the server's CPU per write, the
// invalidation p99, and the cache-miss reads one server answers.
func (r *envelopeResult) table() ([]string, [][]string) {
	head := []string{"coherence", "instances (listening)", "sessions/s written", "vs 1 instance", "DB CPU per write", "invalidation p99 (what is notified)", "cache-miss reads/s"}
	var rows [][]string
	counts := r.counts()
	if len(counts) == 0 {
		return head, nil
	}
	for _, m := range r.Modes {
		var shown []*envelopePoint
		for _, n := range []int{counts[0], 50, counts[len(counts)-1]} {
			p := r.at(m, n)
			if n == counts[len(counts)-1] {
				p = r.point(m, n)
			}
			if p != nil && !slices.Contains(shown, p) {
				shown = append(shown, p)
			}
		}
		for _, p := range shown {
			cpu := medianCPU(p.CPU)
			server := "?"
			if cpu.Server >= 0 {
				server = fmtDur(cpu.Server)
			}
			rows = append(rows, []string{"`" + m + "`", fmt.Sprint(p.listeners()), fmt.Sprintf("%.0f", p.median()), fmtRatio(p.ratio()), server,
				fmt.Sprintf("%s (%s)", fmtDur(p.Latency.FromReturn.P99), p.Notified), fmt.Sprintf("%.0f", r.Reads.median())})
		}
	}
	return head, rows
}

// modeName is the Go name of a coherence mode, for the report's prose.
func modeName(m string) string {
	for _, c := range envelopeModes {
		if c.String() == m {
			return "Coherence" + strings.ToUpper(m[:1]) + m[1:]
		}
	}
	return m
}

// envelopeMax asks for as many listeners as the server takes.
const envelopeMax = 1 << 20

// fmtCount formats a requested listener count.
func fmtCount(n int) string {
	if n >= envelopeMax {
		return "max"
	}
	return fmt.Sprint(n)
}
