// Command bench measures pgsession against other session stores and under
// the loads that tuning MaxIdle, CacheSize, scavenging and purging is
// about, on your own PostgreSQL and Redis, and writes a report: a markdown
// file with the tables, SVG charts and the raw numbers as JSON.
//
//	cd bench && go run .            # about 8 minutes
//	cd bench && go run . -quick     # about a minute
//
// See README.md for the flags, the scenarios and how each is measured.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"
)

// scenarios, in the order a run takes them.
var scenarioNames = []string{"compare", "invalidation", "logout", "throughput", "lock", "envelope", "memory", "readcost", "purge", "users", "tuning"}

// plan is everything one run measures, and how much.
type plan struct {
	scenarios    []string
	compare      compareOptions
	invalidation invalidationOptions
	logout       logoutOptions
	throughput   throughputOptions
	lock         lockOptions
	envelope     envelopeOptions
	memory       memoryOptions
	readCost     readCostOptions
	purge        purgeOptions
	users        usersOptions
	tuning       tuningOptions
}

func (p *plan) has(name string) bool { return slices.Contains(p.scenarios, name) }

// defaultPlan is the full run (or, with quick, the short one) with d the
// measuring time of one cell and repeats rounds.
func defaultPlan(quick bool, d time.Duration, repeats int) plan {
	p := plan{
		scenarios:    scenarioNames,
		compare:      compareOptions{duration: d, repeats: repeats, kinds: storeKinds, payloads: payloads},
		invalidation: invalidationOptions{samples: 1000, sessions: 16},
		logout:       logoutOptions{trials: 200},
		throughput:   throughputOptions{writers: []int{1, 8, 32, 128}, duration: 4 * d, repeats: max(repeats-2, 1)},
		lock:         lockOptions{writers: 8, duration: 8 * d, repeats: repeats, deadline: time.Second},
		envelope:     envelopeOptions{counts: []int{1, 10, 25, 50, envelopeMax}, writers: 8, readers: 8, sessions: 1000, duration: 4 * d, repeats: repeats, samples: 300},
		memory:       memoryOptions{entries: 100_000, writers: 32},
		readCost:     readCostOptions{rate: 500, duration: 4 * d, repeats: repeats},
		purge:        purgeOptions{rows: 1_000_000, savers: 8, baseline: 20 * d},
		users:        usersOptions{rows: 1_000_000, calls: 10_000},
		tuning: tuningOptions{
			sessions: 20_000, zipf: 1.0, rate: 10, reads: 0.7, changes: 0.1,
			warmup: 20 * time.Minute, simTime: 40 * time.Minute,
			maxIdles:   []time.Duration{30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 20 * time.Minute},
			cacheSizes: []int{250, 500, 1000, 2000, 5000, 10_000},
			baseIdle:   5 * time.Minute, baseSize: 10_000, workers: 32, seed: 1,
		},
	}
	if quick {
		p.invalidation.samples = 200
		p.logout.trials = 50
		p.envelope.samples = 50
		p.memory.entries = 20_000
		p.purge.rows = 50_000
		p.users = usersOptions{rows: 100_000, calls: 2000}
		p.tuning.sessions = 5000
		p.tuning.rate = 5
		p.tuning.warmup, p.tuning.simTime = 10*time.Minute, 20*time.Minute
		p.tuning.maxIdles = []time.Duration{time.Minute, 5 * time.Minute, 10 * time.Minute}
		p.tuning.cacheSizes = []int{250, 1000, 10_000}
	}
	// Each tuning configuration takes 48 cells' time, real.
	p.tuning.speedup = float64(p.tuning.warmup+p.tuning.simTime) / float64(48*d)
	return p
}

// smokePlan is the smallest run that still goes through every path: what
// go test runs.
func smokePlan() plan {
	d := 10 * time.Millisecond
	p := defaultPlan(true, d, 1)
	p.invalidation = invalidationOptions{samples: 20, sessions: 4}
	p.logout = logoutOptions{trials: 10}
	p.throughput.writers = []int{1, 32}
	p.lock = lockOptions{writers: 2, duration: 150 * time.Millisecond, repeats: 2, deadline: 100 * time.Millisecond}
	p.envelope = envelopeOptions{counts: []int{1, 3}, writers: 2, readers: 2, sessions: 16, duration: 4 * d, repeats: 2, samples: 4}
	p.memory = memoryOptions{entries: 500, writers: 4}
	p.readCost = readCostOptions{rate: 200, duration: 50 * time.Millisecond, repeats: 1}
	p.purge = purgeOptions{rows: 2000, savers: 2, baseline: 100 * time.Millisecond}
	p.users = usersOptions{rows: 10_000, calls: 200}
	p.tuning.sessions = 200
	p.tuning.warmup, p.tuning.simTime = time.Minute, 2*time.Minute
	p.tuning.speedup = 600
	p.tuning.maxIdles = []time.Duration{time.Minute}
	p.tuning.cacheSizes = []int{100}
	p.tuning.baseIdle, p.tuning.baseSize = time.Minute, 1000
	p.tuning.workers = 4
	return p
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		out      = flag.String("out", "report", "directory the report is written to")
		quick    = flag.Bool("quick", false, "a short run (about a minute): fewer rows, entries, samples and rounds")
		duration = flag.Duration("duration", 0, "measuring time of one cell (one store and operation, in one round); the other scenarios scale with it (default 250ms, -quick 50ms)")
		repeats  = flag.Int("repeats", 0, "rounds of each measurement; the report gives medians (default 5, -quick 2)")
		only     = flag.String("only", "", "comma-separated scenarios to run (default all): "+strings.Join(scenarioNames, ","))
		stores   = flag.String("stores", "", "comma-separated stores of the comparison (default all)")
		cpuProf  = flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
		memProf  = flag.String("memprofile", "", "write a heap profile, taken with the memory scenario's cache full, to this file (samples every 512 bytes during that scenario)")

		samples    = flag.Int("samples", 0, "invalidation latency samples (default 1000, -quick 200)")
		lTrials    = flag.Int("logout-trials", 0, "trials of each action (logout, change) of the logout window scenario (default 200, -quick 50)")
		writers    = flag.String("writers", "", "writer counts of the throughput scenario (default 1,8,32,128)")
		listeners  = flag.String("listeners", "", "listening instances of the scale envelope; max: as many as the server takes (default 1,10,25,50,max; each lowered to what max_connections allows)")
		lWriters   = flag.Int("listener-writers", 0, "concurrent writers of the scale envelope (default 8)")
		entries    = flag.Int("entries", 0, "cached entries of the memory scenario (default 100000, -quick 20000)")
		rate       = flag.Float64("invalidation-rate", 0, "background writes per second of the read cost scenario (default 500)")
		purgeRows  = flag.Int("purge-rows", 0, "expired rows of the purge scenario (default 1000000, -quick 50000)")
		usersRows  = flag.Int("users-rows", 0, "live rows of the users scenario, 5 sessions per user (default 1000000, -quick 100000)")
		usersCalls = flag.Int("users-calls", 0, "Store.Sessions calls of the users scenario (default 10000, -quick 2000)")
		simN       = flag.Int("sim-sessions", 0, "tuning: sessions in the population (default 20000, -quick 5000)")
		simZipf    = flag.Float64("sim-zipf", 0, "tuning: Zipf exponent of session popularity (default 1.0)")
		simRate    = flag.Float64("sim-rate", 0, "tuning: requests per simulated second (default 10, -quick 5)")
		simReads   = flag.Float64("sim-reads", -1, "tuning: share of requests that only read (default 0.7)")
		simChanges = flag.Float64("sim-changes", -1, "tuning: share of requests that save a changed session; the rest save it unchanged (default 0.1)")
		simTime    = flag.Duration("sim-time", 0, "tuning: measured simulated span (default 40m, -quick 20m)")
		simWarmup  = flag.Duration("sim-warmup", 0, "tuning: simulated warm-up before it (default 20m, -quick 10m)")
		simSpeedup = flag.Float64("sim-speedup", 0, "tuning: simulated seconds per real second (default: the span over 48 cells' time)")
		simIdles   = flag.String("sim-maxidle", "", "tuning: MaxIdle values to sweep (default 30s,1m,2m,5m,10m,20m)")
		simSizes   = flag.String("sim-cachesize", "", "tuning: CacheSize values to sweep (default 250,500,1000,2000,5000,10000)")
		simBase    = flag.String("sim-base", "", "tuning: MaxIdle,CacheSize held while the other is swept (default 5m,10000)")
	)
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: go run . [flags]\n\nMeasures pgsession and the stores it is compared with, and writes a report to -out.\nPostgreSQL: $%s, else %s. Redis: $%s, else %s.\n\n",
			envDatabaseURL, localDatabaseURL, envRedisAddr, localRedisAddr)
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	d, r := 250*time.Millisecond, 5
	if *quick {
		d, r = 50*time.Millisecond, 2
	}
	if *duration > 0 {
		d = *duration
	}
	if *repeats > 0 {
		r = *repeats
	}
	p := defaultPlan(*quick, d, r)
	var err error
	if *only != "" {
		p.scenarios = nil
		for _, s := range strings.Split(*only, ",") {
			if !slices.Contains(scenarioNames, s) {
				return fmt.Errorf("-only: no scenario %q (have %s)", s, strings.Join(scenarioNames, ", "))
			}
			p.scenarios = append(p.scenarios, s)
		}
	}
	if *stores != "" {
		p.compare.kinds = nil
		for _, s := range strings.Split(*stores, ",") {
			k, ok := kindByName(s)
			if !ok {
				return fmt.Errorf("-stores: no store %q", s)
			}
			p.compare.kinds = append(p.compare.kinds, k)
		}
	}
	setInt := func(dst *int, v int) {
		if v > 0 {
			*dst = v
		}
	}
	setInt(&p.invalidation.samples, *samples)
	setInt(&p.logout.trials, *lTrials)
	setInt(&p.envelope.writers, *lWriters)
	p.memory.profile = *memProf
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	setInt(&p.memory.entries, *entries)
	setInt(&p.purge.rows, *purgeRows)
	setInt(&p.users.rows, *usersRows)
	setInt(&p.users.calls, *usersCalls)
	setInt(&p.tuning.sessions, *simN)
	if *rate > 0 {
		p.readCost.rate = *rate
	}
	if *writers != "" {
		if p.throughput.writers, err = parseInts(*writers); err != nil {
			return fmt.Errorf("-writers: %w", err)
		}
	}
	if *listeners != "" {
		if p.envelope.counts, err = parseInts(strings.ReplaceAll(*listeners, "max", strconv.Itoa(envelopeMax))); err != nil {
			return fmt.Errorf("-listeners: %w", err)
		}
		slices.Sort(p.envelope.counts)
		p.envelope.counts = slices.Compact(p.envelope.counts)
	}
	t := &p.tuning
	if *simZipf > 0 {
		t.zipf = *simZipf
	}
	if *simRate > 0 {
		t.rate = *simRate
	}
	if *simReads >= 0 {
		t.reads = *simReads
	}
	if *simChanges >= 0 {
		t.changes = *simChanges
	}
	if t.reads+t.changes > 1 {
		return errors.New("-sim-reads plus -sim-changes is over 1")
	}
	if *simTime > 0 {
		t.simTime = *simTime
	}
	if *simWarmup > 0 {
		t.warmup = *simWarmup
	}
	t.speedup = float64(t.warmup+t.simTime) / float64(48*d)
	if *simSpeedup > 0 {
		t.speedup = *simSpeedup
	}
	if *simIdles != "" {
		if t.maxIdles, err = parseDurations(*simIdles); err != nil {
			return fmt.Errorf("-sim-maxidle: %w", err)
		}
	}
	if *simSizes != "" {
		if t.cacheSizes, err = parseInts(*simSizes); err != nil {
			return fmt.Errorf("-sim-cachesize: %w", err)
		}
	}
	if *simBase != "" {
		idle, size, ok := strings.Cut(*simBase, ",")
		if !ok {
			return errors.New("-sim-base: want MaxIdle,CacheSize")
		}
		if t.baseIdle, err = time.ParseDuration(idle); err != nil {
			return fmt.Errorf("-sim-base: %w", err)
		}
		if t.baseSize, err = strconv.Atoi(size); err != nil {
			return fmt.Errorf("-sim-base: %w", err)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	start := time.Now()
	pr := progress(func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	})
	rep, err := measure(ctx, p, pr)
	if err != nil {
		return err
	}
	rep.Command = strings.TrimSpace("go run . " + strings.Join(os.Args[1:], " "))
	rep.Quick = *quick
	files, err := rep.write(*out)
	if err != nil {
		return err
	}
	pr.printf("done: %s", strings.Join(files, ", "))
	return nil
}

// measure runs the plan's scenarios and gathers their results.
func measure(ctx context.Context, p plan, pr progress) (*report, error) {
	needRedis := p.has("compare") && slices.ContainsFunc(p.compare.kinds, func(k storeKind) bool { return k.name == "redistore" })
	e, err := connect(ctx, needRedis)
	if err != nil {
		return nil, err
	}
	defer e.close()
	rep := &report{Started: time.Now(), Timings: map[string]time.Duration{}}
	if err := rep.describeEnv(ctx, e); err != nil {
		return nil, err
	}
	step := func(name string, fn func() error) error {
		if !p.has(name) {
			return nil
		}
		pr.printf("== %s", name)
		t0 := time.Now()
		if err := fn(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		rep.Timings[name] = time.Since(t0)
		return nil
	}
	steps := []struct {
		name string
		fn   func() error
	}{
		{"compare", func() (err error) { rep.Compare, err = runCompare(ctx, e, p.compare, pr); return }},
		{"invalidation", func() (err error) { rep.Invalidation, err = runInvalidation(ctx, e, p.invalidation, pr); return }},
		{"logout", func() (err error) { rep.Logout, err = runLogout(ctx, e, p.logout, pr); return }},
		{"throughput", func() (err error) { rep.Throughput, err = runThroughput(ctx, e, p.throughput, pr); return }},
		{"lock", func() (err error) { rep.Lock, err = runLock(ctx, e, p.lock, pr); return }},
		{"envelope", func() (err error) { rep.Envelope, err = runEnvelope(ctx, e, p.envelope, pr); return }},
		{"memory", func() (err error) { rep.Memory, err = runMemory(ctx, e, p.memory, pr); return }},
		{"readcost", func() (err error) { rep.ReadCost, err = runReadCost(ctx, e, p.readCost, pr); return }},
		{"purge", func() (err error) { rep.Purge, err = runPurge(ctx, e, p.purge, pr); return }},
		{"users", func() (err error) { rep.Users, err = runUsers(ctx, e, p.users, pr); return }},
		{"tuning", func() (err error) {
			// Cache memory in the tuning tables is entries times the
			// bytes an entry costs: from the memory scenario, or a small
			// measurement of its own.
			m := rep.Memory
			if m == nil {
				if m, err = runMemory(ctx, e, memoryOptions{entries: 10_000, writers: 16}, pr); err != nil {
					return err
				}
			}
			p.tuning.entryBytes = m.PerEntry
			rep.Tuning, err = runTuning(ctx, e, p.tuning, pr)
			return
		}},
	}
	for _, s := range steps {
		if err := step(s.name, s.fn); err != nil {
			return nil, err
		}
	}
	rep.Finished = time.Now()
	return rep, nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func parseDurations(s string) ([]time.Duration, error) {
	var out []time.Duration
	for _, f := range strings.Split(s, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(f))
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("%q is not a positive duration", f)
		}
		out = append(out, d)
	}
	return out, nil
}
