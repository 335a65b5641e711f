package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// timing is one measurement of an operation: how many ran, in how much
// wall time, with how much CPU time of the whole process.
type timing struct {
	ops  int64
	wall time.Duration
	cpu  time.Duration // 0 when the platform cannot tell
}

func (t timing) nsPerOp() float64    { return float64(t.wall.Nanoseconds()) / float64(max(t.ops, 1)) }
func (t timing) cpuNsPerOp() float64 { return float64(t.cpu.Nanoseconds()) / float64(max(t.ops, 1)) }
func (t timing) perSecond() float64  { return float64(t.ops) / t.wall.Seconds() }

// checkEvery is how many operations run between two looks at the clock.
const checkEvery = 8

// timeSerial runs do over and over for at least d (and at least once).
func timeSerial(d time.Duration, do func() error) (timing, error) {
	cpu0, _ := processCPU()
	start := time.Now()
	var n int64
	for {
		for range checkEvery {
			if err := do(); err != nil {
				return timing{}, err
			}
			n++
		}
		if time.Since(start) >= d {
			break
		}
	}
	wall := time.Since(start)
	cpu1, ok := processCPU()
	t := timing{ops: n, wall: wall}
	if ok {
		t.cpu = cpu1 - cpu0
	}
	return t, nil
}

// timeParallel runs do from workers goroutines at once, worker i calling
// do(i), all for at least d. Wall time per op is the elapsed time over all
// operations: the inverse of the throughput.
func timeParallel(d time.Duration, workers int, do func(worker int) error) (timing, error) {
	var (
		n     atomic.Int64
		stop  atomic.Bool
		wg    sync.WaitGroup
		first error
		once  sync.Once
	)
	ready := make(chan struct{})
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-ready
			for !stop.Load() {
				if err := do(w); err != nil {
					once.Do(func() { first = err })
					stop.Store(true)
					return
				}
				n.Add(1)
			}
		}()
	}
	cpu0, _ := processCPU()
	start := time.Now()
	close(ready)
	timer := time.NewTimer(d)
	<-timer.C
	stop.Store(true)
	wg.Wait()
	wall := time.Since(start)
	if first != nil {
		return timing{}, first
	}
	cpu1, ok := processCPU()
	t := timing{ops: n.Load(), wall: wall}
	if ok {
		t.cpu = cpu1 - cpu0
	}
	return t, nil
}

// latencies collects the durations of operations.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) addAll(ds []time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, ds...)
	l.mu.Unlock()
}

// dist is a summary of a distribution of durations.
type dist struct {
	N                  int
	Mean               time.Duration
	P50, P90, P99, Max time.Duration
}

func (l *latencies) dist() dist {
	l.mu.Lock()
	defer l.mu.Unlock()
	return summarize(l.d)
}

func summarize(ds []time.Duration) dist {
	if len(ds) == 0 {
		return dist{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return dist{
		N:    len(s),
		Mean: sum / time.Duration(len(s)),
		P50:  quantile(s, 0.50),
		P90:  quantile(s, 0.90),
		P99:  quantile(s, 0.99),
		Max:  s[len(s)-1],
	}
}

// quantile returns the q-quantile of sorted (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// median returns the median of xs (the mean of the middle two for an even
// count), or NaN for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// quantileOf returns the q-quantile of xs (nearest rank), or NaN.
func quantileOf(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func medianDuration(ds []time.Duration) time.Duration {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = float64(d)
	}
	return time.Duration(median(xs))
}

// pace calls fire rate times a second until ctx ends, from workers
// goroutines, so that one slow call does not hold the others back. It
// returns how many calls were made and how many ticks found every worker
// busy (skipped). The first error stops it and is returned.
func pace(ctx context.Context, rate float64, workers int, fire func(worker int) error) (done, skipped int64, err error) {
	ticks := make(chan struct{}, workers)
	var (
		wg    sync.WaitGroup
		n     atomic.Int64
		first error
		once  sync.Once
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range ticks {
				if err := fire(w); err != nil {
					once.Do(func() { first = err; cancel() })
					continue
				}
				n.Add(1)
			}
		}()
	}
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	var sent int64
	timer := time.NewTimer(interval)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-timer.C:
		}
		// Catch up with the schedule: a late timer fires every tick due.
		due := int64(time.Since(start) / interval)
		for ; sent < due; sent++ {
			select {
			case ticks <- struct{}{}:
			default:
				skipped++
			}
		}
		timer.Reset(time.Until(start.Add(time.Duration(sent+1) * interval)))
	}
	timer.Stop()
	close(ticks)
	wg.Wait()
	return n.Load(), skipped, first
}

// progress reports what a run is doing, on a line of its own each time.
type progress func(format string, args ...any)

func (p progress) printf(format string, args ...any) {
	if p != nil {
		p(format, args...)
	}
}

// fmtDur formats a duration for a table: µs with one decimal under 10 ms.
func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	case d < 10*time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return d.Round(time.Millisecond).String()
}

// cpuSnap is the CPU time used so far by this process and, when it runs
// on this machine, by the database server.
type cpuSnap struct {
	client, server     time.Duration
	clientOK, serverOK bool
}

func takeCPU() cpuSnap {
	var s cpuSnap
	s.client, s.clientOK = processCPU()
	s.server, s.serverOK = serverCPU()
	return s
}

// cpuPerOp is CPU time per operation between two snapshots, split between
// this process and the database server; -1 where it could not be read.
type cpuPerOp struct {
	Client, Server time.Duration
}

func (a cpuSnap) perOp(b cpuSnap, ops int64) cpuPerOp {
	c := cpuPerOp{Client: -1, Server: -1}
	if ops <= 0 {
		return c
	}
	if a.clientOK && b.clientOK {
		c.Client = (b.client - a.client) / time.Duration(ops)
	}
	if a.serverOK && b.serverOK {
		c.Server = (b.server - a.server) / time.Duration(ops)
	}
	return c
}

// medianCPU is the median of each part of cs.
func medianCPU(cs []cpuPerOp) cpuPerOp {
	var cl, sv []time.Duration
	for _, c := range cs {
		if c.Client >= 0 {
			cl = append(cl, c.Client)
		}
		if c.Server >= 0 {
			sv = append(sv, c.Server)
		}
	}
	m := cpuPerOp{Client: -1, Server: -1}
	if len(cl) > 0 {
		m.Client = medianDuration(cl)
	}
	if len(sv) > 0 {
		m.Server = medianDuration(sv)
	}
	return m
}

func (c cpuPerOp) String() string {
	f := func(d time.Duration) string {
		if d < 0 {
			return "?"
		}
		return fmtDur(d)
	}
	return f(c.Client) + " + " + f(c.Server)
}

// forEach runs fn(0) to fn(n-1) on workers goroutines; a worker stops at its
// first error. It returns the errors joined.
func forEach(n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// serverShare is the set of server processes whose CPU time a measurement
// counts.
type serverShare struct {
	pids []int
	own  bool // pids are this run's backends and the server's background processes; false: every postgres process
}

// ownServerShare returns the backends serving this process's connections
// and the server's background processes (WAL writer, checkpointer,
// autovacuum...), so that other clients' queries on a shared server stay
// out of a measurement. Where the suite cannot tell its backends apart (a
// Unix socket, another OS), it counts every postgres process.
func (e *env) ownServerShare(ctx context.Context) (serverShare, error) {
	cc, err := pgx.ParseConfig(e.dbURL)
	if err != nil || strings.HasPrefix(cc.Host, "/") {
		return serverShare{}, nil
	}
	ports := ownClientPorts(int(cc.Port))
	if len(ports) == 0 {
		return serverShare{}, nil
	}
	rows, err := e.pool.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE backend_type <> 'client backend' OR client_port = ANY($1::int[])`, ports)
	if err != nil {
		return serverShare{}, err
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return serverShare{}, err
	}
	return serverShare{pids: pids, own: true}, nil
}

// take is takeCPU with the server's time counted over the share, and the
// whole server's besides.
func (sh serverShare) take() (snap cpuSnap, all time.Duration, allOK bool) {
	snap = takeCPU()
	all, allOK = snap.server, snap.serverOK
	if sh.own {
		snap.server, snap.serverOK = pidsCPU(sh.pids)
	}
	return snap, all, allOK
}

// listeningConns counts the connections of this process that a pgsession
// listener holds (by the application_name it sets), or returns -1 where the
// suite cannot tell its connections from others' (a Unix socket, another
// OS).
func (e *env) listeningConns(ctx context.Context) (int, error) {
	cc, err := pgx.ParseConfig(e.dbURL)
	if err != nil || strings.HasPrefix(cc.Host, "/") {
		return -1, nil
	}
	ports := ownClientPorts(int(cc.Port))
	if len(ports) == 0 {
		return -1, nil
	}
	var n int
	err = e.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE client_port = ANY($1::int[]) AND (application_name LIKE 'pgsession listener%' OR application_name LIKE 'pgsbench_listener_%')`, ports).Scan(&n)
	return n, err
}
