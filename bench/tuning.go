package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgsession/pgsession"
)

// Tuning: a simulated population of users against one real Store, swept
// over MaxIdle and CacheSize.
//
// The population. N sessions, made before the run. Requests arrive as a
// Poisson process of the given rate; each picks its session from a Zipf
// law of exponent s over the N (the k-th most popular is asked for in
// proportion to 1/k^s), so session k sees exponential think times between
// its requests, of mean 1/(rate*p_k). A request reads its session (Get,
// values read); a given share then saves it changed, another share saves it
// unchanged (what a framework that always saves does). The same seed gives
// every configuration the same requests at the same simulated instants.
//
// Time. The Store runs on an injected clock (Config.Clock) that runs the
// speed-up factor faster than the real one, so MaxIdle and RefreshAfter are
// given in simulated time, as a user would set them; only the scavenger's
// real ticker (1 simulated second, or minScavengeInterval real when that is
// longer) and the request schedule are divided by the factor, and the
// requests are issued at their real instants by a pool of workers. The
// simulation holds as long as a request's own real duration, times the
// factor, stays short next to the think times and MaxIdle: the report gives
// how late requests started (in simulated time) so that this can be checked.
// A warm-up (not measured) precedes the measured span.
//
// Measured, per simulated second of the measured span: cache hit ratio of
// Gets, database reads (Stats.Loads) and writes (Saves + Refreshes); the
// cache's entries are sampled every simulated minute, and its memory is
// their mean times the bytes per entry the memory scenario measured.

type tuningOptions struct {
	sessions   int
	zipf       float64
	rate       float64       // simulated requests per second
	reads      float64       // share of requests that only read
	changes    float64       // share that save a changed session; the rest save it unchanged
	warmup     time.Duration // simulated, not measured
	simTime    time.Duration // simulated, measured
	speedup    float64
	maxIdles   []time.Duration // swept at baseSize
	cacheSizes []int           // swept at baseIdle
	baseIdle   time.Duration
	baseSize   int
	workers    int
	seed       uint64
	entryBytes float64 // bytes one cached entry costs, payload included
}

type tuningPoint struct {
	Sweeps         []string // "MaxIdle", "CacheSize": the sweeps the point belongs to
	MaxIdle        time.Duration
	CacheSize      int
	Requests       int64 // in the measured span
	HitRatio       float64
	DBReadsPerSec  float64 // per simulated second
	DBWritesPerSec float64
	MeanEntries    float64
	MaxEntries     int64
	CacheBytes     float64 // MeanEntries * entry bytes
	Scavenged      int64
	LagP99, LagMax time.Duration // simulated: how late requests started
	BusyP99        time.Duration // simulated: how long a request took, p99
	RealTime       time.Duration
}

type tuningResult struct {
	Sessions    int
	Zipf        float64
	Rate        float64
	Reads       float64
	Changes     float64
	Warmup      time.Duration
	SimTime     time.Duration
	Speedup     float64
	EntryBytes  float64
	TopThink    time.Duration // mean think time of the most popular session
	MedianThink time.Duration // of the session of median popularity
	Points      []*tuningPoint
}

// zipfCDF returns the cumulative Zipf(s) probabilities over n ranks.
func zipfCDF(n int, s float64) []float64 {
	cdf := make([]float64, n)
	var sum float64
	for k := range n {
		sum += 1 / math.Pow(float64(k+1), s)
		cdf[k] = sum
	}
	for k := range cdf {
		cdf[k] /= sum
	}
	return cdf
}

type simKind uint8

const (
	simRead simKind = iota
	simChange
	simTouch // save unchanged
)

type simEvent struct {
	at      time.Duration // simulated, from the start
	session int32
	kind    simKind
}

// schedule returns the requests of the whole simulated span, in order.
func (o tuningOptions) schedule() []simEvent {
	rng := rand.New(rand.NewPCG(o.seed, 0x70677362))
	cdf := zipfCDF(o.sessions, o.zipf)
	total := o.warmup + o.simTime
	var evs []simEvent
	var t time.Duration
	for {
		t += time.Duration(rng.ExpFloat64() / o.rate * float64(time.Second))
		if t >= total {
			return evs
		}
		k := sort.SearchFloat64s(cdf, rng.Float64())
		kind := simRead
		switch u := rng.Float64(); {
		case u < o.reads:
		case u < o.reads+o.changes:
			kind = simChange
		default:
			kind = simTouch
		}
		evs = append(evs, simEvent{at: t, session: int32(min(k, o.sessions-1)), kind: kind})
	}
}

// configs returns the configurations to run: the MaxIdle sweep at
// baseSize, then the CacheSize sweep at baseIdle, the shared point once.
func (o tuningOptions) configs() []*tuningPoint {
	var pts []*tuningPoint
	find := func(idle time.Duration, size int) *tuningPoint {
		for _, p := range pts {
			if p.MaxIdle == idle && p.CacheSize == size {
				return p
			}
		}
		p := &tuningPoint{MaxIdle: idle, CacheSize: size}
		pts = append(pts, p)
		return p
	}
	for _, idle := range o.maxIdles {
		p := find(idle, o.baseSize)
		p.Sweeps = append(p.Sweeps, "MaxIdle")
	}
	for _, size := range o.cacheSizes {
		p := find(o.baseIdle, size)
		p.Sweeps = append(p.Sweeps, "CacheSize")
	}
	return pts
}

func (p *tuningPoint) in(sweep string) bool { return slices.Contains(p.Sweeps, sweep) }

func runTuning(ctx context.Context, e *env, o tuningOptions, pr progress) (_ *tuningResult, err error) {
	cdf := zipfCDF(o.sessions, o.zipf)
	think := func(rank int) time.Duration {
		p := cdf[rank]
		if rank > 0 {
			p -= cdf[rank-1]
		}
		return time.Duration(float64(time.Second) / (o.rate * p))
	}
	res := &tuningResult{
		Sessions: o.sessions, Zipf: o.zipf, Rate: o.rate, Reads: o.reads, Changes: o.changes,
		Warmup: o.warmup, SimTime: o.simTime, Speedup: o.speedup, EntryBytes: o.entryBytes,
		TopThink: think(0), MedianThink: think(o.sessions / 2),
	}
	pool, err := e.newPool(ctx, 8, nil)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	// The sessions, made by a Store of their own (cache off) that is closed
	// before the simulation: every configuration starts with a cold cache.
	setup, table, err := newPgsession(ctx, e, pool, pgsession.Config{CacheSize: -1, PurgeInterval: -1})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, e.dropTable(table)) }()
	pr.printf("tuning: creating %d sessions", o.sessions)
	cookies, err := createSessions(ctx, setup, o.sessions, 16)
	if cerr := setup.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	events := o.schedule()
	configs := o.configs()
	for i, p := range configs {
		pr.printf("tuning: %d/%d MaxIdle %v CacheSize %d: %v simulated in %v",
			i+1, len(configs), p.MaxIdle, p.CacheSize, o.warmup+o.simTime,
			time.Duration(float64(o.warmup+o.simTime)/o.speedup).Round(time.Millisecond))
		if err := simulate(ctx, e, pool, table, cookies, events, o, p); err != nil {
			return nil, fmt.Errorf("tuning MaxIdle %v CacheSize %d: %w", p.MaxIdle, p.CacheSize, err)
		}
		res.Points = append(res.Points, p)
	}
	return res, nil
}

// createSessions saves n sessions through s, from workers goroutines, and
// returns their cookies.
func createSessions(ctx context.Context, s *pgsession.Store, n, workers int) ([]atomic.Pointer[string], error) {
	cookies := make([]atomic.Pointer[string], n)
	err := forEach(n, workers, func(i int) error {
		ws, err := newWriterSession(ctx, s, payloadSmall)
		if err == nil {
			c := ws.cookie
			cookies[i].Store(&c)
		}
		return err
	})
	return cookies, err
}

// minScavengeInterval is the shortest ScavengeInterval pgsession accepts
// (New rejects a shorter one): at the default speed-up, 3 simulated
// seconds, still small next to the smallest MaxIdle swept.
const minScavengeInterval = 10 * time.Millisecond

// simulate runs the schedule against a new Store configured as p says, and
// fills in p.
func simulate(ctx context.Context, e *env, pool *pgxpool.Pool, table string, cookies []atomic.Pointer[string], events []simEvent, o tuningOptions, p *tuningPoint) error {
	scale := func(d time.Duration) time.Duration { return time.Duration(float64(d) / o.speedup) }
	realBase, simBase := time.Now(), time.Now()
	simClock := func() time.Time { // o.speedup simulated seconds per real second
		return simBase.Add(time.Duration(float64(time.Since(realBase)) * o.speedup))
	}
	s, _, err := newPgsession(ctx, e, pool, pgsession.Config{
		Table:            table,
		SkipCreateTable:  true,
		CacheSize:        p.CacheSize,
		MaxIdle:          p.MaxIdle,
		ScavengeInterval: max(scale(time.Second), minScavengeInterval),
		PurgeInterval:    -1,
		Clock:            simClock,
	})
	if err != nil {
		return err
	}
	defer s.Close()

	type job struct {
		ev  simEvent
		due time.Time
	}
	jobs := make(chan job, 4096)
	lags := make([][]time.Duration, o.workers)
	busy := make([][]time.Duration, o.workers)
	errs := make([]error, o.workers)
	var wg sync.WaitGroup
	var failed atomic.Bool
	for w := range o.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := httptest.NewRecorder()
			for j := range jobs {
				if failed.Load() {
					continue
				}
				t0 := time.Now()
				lags[w] = append(lags[w], time.Duration(float64(t0.Sub(j.due))*o.speedup))
				if err := simRequest(s, &cookies[j.ev.session], j.ev.kind, rec); err != nil {
					errs[w] = err
					failed.Store(true)
					continue
				}
				busy[w] = append(busy[w], time.Duration(float64(time.Since(t0))*o.speedup))
			}
		}()
	}

	// The sampler reads the cache's size every simulated minute of the
	// measured span.
	var entries []int64
	sampled := make(chan struct{})
	start := time.Now().Add(5 * time.Millisecond)
	measureFrom := start.Add(scale(o.warmup))
	end := start.Add(scale(o.warmup + o.simTime))
	sctx, stopSampler := context.WithCancel(ctx)
	go func() {
		defer close(sampled)
		select {
		case <-sctx.Done():
			return
		case <-time.After(time.Until(measureFrom)):
		}
		t := time.NewTicker(max(scale(time.Minute), time.Millisecond))
		defer t.Stop()
		for {
			entries = append(entries, s.Stats().Entries)
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
		}
	}()

	var before pgsession.Stats
	measuring := false
	for _, ev := range events {
		if failed.Load() {
			break
		}
		due := start.Add(scale(ev.at))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		if !measuring && ev.at >= o.warmup {
			before, measuring = s.Stats(), true
		}
		if measuring {
			p.Requests++
		}
		jobs <- job{ev, due}
	}
	close(jobs)
	wg.Wait()
	after := s.Stats()
	if d := time.Until(end); d > 0 && !failed.Load() {
		time.Sleep(d) // the span ends on the schedule, not at the last request
	}
	stopSampler()
	<-sampled
	p.RealTime = time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if !measuring {
		return errors.New("no request in the measured span: raise -sim-rate or -sim-time")
	}

	secs := o.simTime.Seconds()
	hits, misses := after.CacheHits-before.CacheHits, after.CacheMisses-before.CacheMisses
	if hits+misses > 0 {
		p.HitRatio = float64(hits) / float64(hits+misses)
	}
	p.DBReadsPerSec = float64(after.Loads-before.Loads) / secs
	p.DBWritesPerSec = float64(after.Saves-before.Saves+after.Refreshes-before.Refreshes) / secs
	p.Scavenged = after.Scavenged - before.Scavenged
	var sum int64
	for _, n := range entries {
		sum += n
		p.MaxEntries = max(p.MaxEntries, n)
	}
	if len(entries) > 0 {
		p.MeanEntries = float64(sum) / float64(len(entries))
	}
	p.CacheBytes = p.MeanEntries * o.entryBytes
	var allLag, allBusy []time.Duration
	for w := range lags {
		allLag = append(allLag, lags[w]...)
		allBusy = append(allBusy, busy[w]...)
	}
	l := summarize(allLag)
	p.LagP99, p.LagMax = l.P99, l.Max
	p.BusyP99 = summarize(allBusy).P99
	return nil
}

// simRequest is one request of the simulation: Get with the session's
// newest cookie, the values read, and for a write a Save.
func simRequest(s *pgsession.Store, cookie *atomic.Pointer[string], kind simKind, rec *httptest.ResponseRecorder) error {
	r := &http.Request{Method: http.MethodGet, Header: http.Header{"Cookie": {sessionName + "=" + *cookie.Load()}}}
	sess, err := s.Get(r, sessionName)
	if err != nil {
		return err
	}
	if sess.IsNew {
		return errors.New("a simulated session is gone")
	}
	if err := payloadSmall.check(sess.Values); err != nil {
		return err
	}
	if kind == simRead {
		return nil
	}
	if kind == simChange {
		sess.Values[keyCounter] = sess.Values[keyCounter].(int) + 1
	}
	clear(rec.Header())
	if err := s.Save(r, rec, sess); err != nil {
		return err
	}
	for _, c := range (&http.Response{Header: rec.Header()}).Cookies() {
		if c.Name == sessionName {
			v := c.Value
			cookie.Store(&v)
			return nil
		}
	}
	return errors.New("save set no session cookie")
}
