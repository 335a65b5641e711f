package main

import (
	"context"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
)

// The tests are the smoke version of the tool: every store, every
// operation and every scenario, at tiny sizes, so that the suite cannot
// rot. They need PostgreSQL and Redis, and fail (never skip) without them.

var testEnv struct {
	once sync.Once
	e    *env
	err  error
}

// mustEnv returns the run's database and Redis, or fails tb saying how to
// provide them.
func mustEnv(tb testing.TB) *env {
	tb.Helper()
	testEnv.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		testEnv.e, testEnv.err = connect(ctx, true)
	})
	if testEnv.err != nil {
		tb.Fatal(testEnv.err)
	}
	return testEnv.e
}

func TestMain(m *testing.M) {
	code := m.Run()
	if testEnv.e != nil {
		testEnv.e.close()
	}
	os.Exit(code)
}

// openFixture opens a store of kind k for p, closed when tb ends.
func openFixture(tb testing.TB, k storeKind, p payload) *fixture {
	tb.Helper()
	f, err := k.open(context.Background(), mustEnv(tb), p)
	if err != nil {
		tb.Fatalf("open %s: %v", k.name, err)
	}
	tb.Cleanup(func() {
		if err := f.close(); err != nil {
			tb.Errorf("close %s: %v", k.name, err)
		}
	})
	return f
}

func newTestClient(tb testing.TB, f *fixture) *client {
	tb.Helper()
	c, err := f.newClient(context.Background())
	if err != nil {
		tb.Fatalf("%s: %v", f.kind, err)
	}
	return c
}

// TestSmoke runs every operation of every store once, for each payload,
// and checks that it did what its name says.
func TestSmoke(t *testing.T) {
	mustEnv(t) // fail once, clearly, before the subtests
	for _, p := range payloads {
		for _, k := range storeKinds {
			t.Run("payload="+p.name+"/store="+k.name, func(t *testing.T) {
				f := openFixture(t, k, p)
				c := newTestClient(t, f)
				before := stats(f)

				if !k.saves {
					if err := c.get(); err != nil {
						t.Fatal(err)
					}
				}
				afterGet := stats(f)

				if err := c.saveChanged(); err != nil {
					t.Fatal(err)
				}
				afterChanged := stats(f)
				checkSaved(t, c)

				if err := c.saveUnchanged(); err != nil {
					t.Fatal(err)
				}
				afterUnchanged := stats(f)

				// The pgsession rows must take the paths their names promise.
				switch k.name {
				case "pgsession-cache", "pgsession-cache-aes":
					if d := afterGet.CacheHits - before.CacheHits; d != 1 || afterGet.Loads != before.Loads {
						t.Errorf("Get: %d cache hits and %d loads, want 1 hit and no load", d, afterGet.Loads-before.Loads)
					}
					if d := afterChanged.Saves - afterGet.Saves; d != 1 {
						t.Errorf("changed Save: %d database writes, want 1", d)
					}
					if d := afterUnchanged.SavesSkipped - afterChanged.SavesSkipped; d != 1 || afterUnchanged.Saves != afterChanged.Saves {
						t.Errorf("unchanged Save: %d skipped and %d written, want 1 skipped", d, afterUnchanged.Saves-afterChanged.Saves)
					}
				case "pgsession-nocache":
					if d := afterGet.Loads - before.Loads; d != 1 || afterGet.CacheHits != 0 {
						t.Errorf("Get: %d loads and %d cache hits, want 1 load", d, afterGet.CacheHits)
					}
					if d := afterUnchanged.Saves - afterChanged.Saves; d != 1 {
						t.Errorf("unchanged Save: %d database writes, want 1", d)
					}
				}
			})
		}
	}
}

func stats(f *fixture) pgsession.Stats {
	if f.pg == nil {
		return pgsession.Stats{}
	}
	return f.pg.Stats()
}

// checkSaved checks that the changed Save stored the new counter: a client
// that sends the cookie the Save set (or holds the token) reads it back.
func checkSaved(t *testing.T, c *client) {
	t.Helper()
	switch {
	case c.f.raw != nil:
		data, err := c.rawData()
		if err != nil {
			t.Fatal(err)
		}
		if got := binary.LittleEndian.Uint64(data[len(data)-8:]); got != uint64(c.n) {
			t.Fatalf("raw row holds counter %d, want %d", got, c.n)
		}
		return
	case c.f.scs != nil:
		ctx, err := c.scsLoad()
		if err != nil {
			t.Fatal(err)
		}
		if got := c.f.scs.GetInt(ctx, keyCounter); got != c.n {
			t.Fatalf("after a changed Save, Load reads counter %v, want %d", got, c.n)
		}
		return
	}
	value, err := c.cookie()
	if err != nil {
		t.Fatal(err)
	}
	next := *c
	next.setCookie(value)
	_, s, err := next.load()
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Values[keyCounter]; got != c.n {
		t.Fatalf("after a changed Save, Get reads counter %v, want %d", got, c.n)
	}
}

// TestScenarios runs every scenario of the tool at its smallest and
// renders the report, checking that each measured what it claims.
func TestScenarios(t *testing.T) {
	e := mustEnv(t)
	ctx := context.Background()
	p := smokePlan()
	pr := progress(func(format string, args ...any) { t.Logf(format, args...) })
	rep := &report{Started: time.Now(), Timings: map[string]time.Duration{}, Command: "go test"}
	if err := rep.describeEnv(ctx, e); err != nil {
		t.Fatal(err)
	}
	var err error

	t.Run("compare", func(t *testing.T) {
		if rep.Compare, err = runCompare(ctx, e, p.compare, pr); err != nil {
			t.Fatal(err)
		}
		for _, k := range storeKinds {
			for _, op := range ops {
				for _, pl := range payloads {
					c := rep.Compare.cell(k.name, pl.name, op.name)
					if op.gets && k.saves {
						if c != nil {
							t.Errorf("%s has a %s row", k.name, op.name)
						}
						continue
					}
					if c == nil || c.Ops == 0 || !(c.median() > 0) {
						t.Errorf("%s %s %s: no measurement", k.name, pl.name, op.name)
					}
				}
			}
		}
		// Save changed against the floor, in alternating slices: one ratio
		// per pair of slices, each a real measurement.
		for _, pl := range payloads {
			q := rep.Compare.pairs(pl.name)
			if len(q) != p.compare.repeats*pairSlices {
				t.Errorf("%s: %d paired Save changed ratios, want %d", pl.name, len(q), p.compare.repeats*pairSlices)
			}
			for _, x := range q {
				if !(x > 0) || math.IsInf(x, 0) {
					t.Errorf("%s: paired ratio %v", pl.name, x)
				}
			}
		}
		// Save changed updates the existing row, once per op; pgsession's
		// updates are mostly HOT, the floor's (a new expiry each time)
		// never.
		for _, pl := range payloads {
			for _, k := range storeKinds {
				c := rep.Compare.cell(k.name, pl.name, hotOp)
				hasTable := strings.HasPrefix(k.name, "pgsession") || strings.HasPrefix(k.name, "raw") || strings.HasPrefix(k.name, "scs")
				if c == nil || (c.HOT != nil) != hasTable {
					t.Errorf("%s %s: HOT counters %v, want them: %v", k.name, pl.name, c != nil && c.HOT != nil, hasTable)
					continue
				}
				h := c.HOT
				if h == nil {
					continue
				}
				if h.Updates != h.Ops || h.Inserts != 0 || h.Unsettled != 0 {
					t.Errorf("%s %s: %d updates and %d inserts in %d ops (%d unsettled snapshots), want an update per op", k.name, pl.name, h.Updates, h.Inserts, h.Ops, h.Unsettled)
				}
				if strings.HasPrefix(k.name, "pgsession") && h.Ratio < 0.5 {
					t.Errorf("%s %s: HOT ratio %.3f, want most updates HOT", k.name, pl.name, h.Ratio)
				}
				if strings.HasPrefix(k.name, "raw") && h.HotUpdates != 0 {
					t.Errorf("%s %s: %d HOT updates; the floor changes an indexed column every time", k.name, pl.name, h.HotUpdates)
				}
			}
		}
	})
	t.Run("invalidation", func(t *testing.T) {
		if rep.Invalidation, err = runInvalidation(ctx, e, p.invalidation, pr); err != nil {
			t.Fatal(err)
		}
		if inv := rep.Invalidation; inv.Lost != 0 || inv.FromReturn.N != p.invalidation.samples || inv.FromReturn.P50 <= 0 {
			t.Errorf("%d samples, %d lost, p50 %v", inv.FromReturn.N, inv.Lost, inv.FromReturn.P50)
		}
	})
	t.Run("logout", func(t *testing.T) {
		if rep.Logout, err = runLogout(ctx, e, p.logout, pr); err != nil {
			t.Fatal(err)
		}
		for _, act := range []string{actLogout, actChange} {
			row := rep.Logout.row(act)
			if row == nil {
				t.Errorf("no %s row", act)
				continue
			}
			if row.Trials != p.logout.trials || row.Window.N != row.Trials || row.Open.N != row.Served || row.Lost != 0 || row.Save.P50 <= 0 {
				t.Errorf("%s: %d trials of %d, %d windows, %d served, %d open, %d lost, Save p50 %v",
					act, row.Trials, p.logout.trials, row.Window.N, row.Served, row.Open.N, row.Lost, row.Save.P50)
			}
		}
	})
	t.Run("throughput", func(t *testing.T) {
		if rep.Throughput, err = runThroughput(ctx, e, p.throughput, pr); err != nil {
			t.Fatal(err)
		}
		for _, mode := range throughputModes {
			for _, n := range p.throughput.writers {
				if c := rep.Throughput.cell(mode, n); c == nil || !(c.median() > 0) || c.Latency.N == 0 {
					t.Errorf("%s, %d writers: no measurement", mode, n)
				}
			}
		}
	})
	t.Run("lock", func(t *testing.T) {
		if rep.Lock, err = runLock(ctx, e, p.lock, pr); err != nil {
			t.Fatal(err)
		}
		for _, ph := range rep.Lock.Phases {
			if len(ph.PerSec) != p.lock.repeats || ph.Saves == 0 || ph.Latency.N != int(ph.Saves) {
				t.Errorf("%s: %d rounds of %d, %d saves, %d latencies", ph.Phase, len(ph.PerSec), p.lock.repeats, ph.Saves, ph.Latency.N)
			}
		}
		// Every Save of the locked session fails with its deadline.
		if l := rep.Lock.Locked; l.Attempts == 0 || l.Deadline != l.Attempts || l.Succeeded != 0 {
			t.Errorf("locked session: %d attempts, %d deadline errors, %d succeeded, %d other errors (%s)", l.Attempts, l.Deadline, l.Succeeded, l.Other, l.OtherErr)
		}
		if rep.Lock.P99Ratio <= 0 {
			t.Errorf("p99 ratio %v", rep.Lock.P99Ratio)
		}
	})
	t.Run("envelope", func(t *testing.T) {
		o := p.envelope
		if rep.Envelope, err = runEnvelope(ctx, e, o, pr); err != nil {
			t.Fatal(err)
		}
		env := rep.Envelope
		if len(env.Points) != len(o.counts)*len(envelopeModes) {
			t.Fatalf("%d points, want %d", len(env.Points), len(o.counts)*len(envelopeModes))
		}
		for _, pt := range env.Points {
			if pt.listeners() != pt.Requested || len(pt.PerSec) != o.repeats || len(pt.Ratio) != o.repeats || !(pt.median() > 0) ||
				pt.Latency.FromReturn.N == 0 || pt.Latency.Lost != 0 {
				t.Errorf("%s, %d of %d listeners: %d rounds, %d ratios, %.0f saves/s, %d latency samples, %d lost",
					pt.Mode, pt.listeners(), pt.Requested, len(pt.PerSec), len(pt.Ratio), pt.median(), pt.Latency.FromReturn.N, pt.Latency.Lost)
			}
		}
		// CoherenceRevocations saves send no notification: the listener
		// hears only probes, far fewer than CoherenceAll's saves.
		for _, n := range o.counts {
			all, rev := env.point(pgsession.CoherenceAll.String(), n), env.point(pgsession.CoherenceRevocations.String(), n)
			if all == nil || rev == nil {
				t.Fatalf("%d listeners: a mode is missing", n)
			}
			if a, r := median(all.Notices), median(rev.Notices); !(r < a/2) {
				t.Errorf("%d listeners: %.3f notifications per save (all) vs %.3f (revocations), want revocations' far fewer", n, a, r)
			}
		}
		if r := env.Reads; len(r.PerSec) != o.repeats || !(r.median() > 0) {
			t.Errorf("cache-miss reads: %d rounds, %.0f reads/s", len(r.PerSec), r.median())
		}
		if _, rows := env.table(); len(rows) != len(o.counts)*len(envelopeModes) {
			t.Errorf("the README table has %d rows, want one per mode and count", len(rows))
		}
	})
	t.Run("memory", func(t *testing.T) {
		if rep.Memory, err = runMemory(ctx, e, p.memory, pr); err != nil {
			t.Fatal(err)
		}
		// The smoke run is too small for a stable number; it must be a
		// plausible one.
		if m := rep.Memory; m.PerEntry < float64(m.PayloadBytes) || m.PerEntry > 100_000 {
			t.Errorf("%.0f bytes per entry with a %d-byte payload", m.PerEntry, m.PayloadBytes)
		}
	})
	t.Run("readcost", func(t *testing.T) {
		if rep.ReadCost, err = runReadCost(ctx, e, p.readCost, pr); err != nil {
			t.Fatal(err)
		}
		for _, c := range rep.ReadCost.Cells {
			if !(c.median() > 0) || c.Misses != 0 {
				t.Errorf("%s: %.0f ns/op, %d cache misses", c.Cond, c.median(), c.Misses)
			}
		}
		if s := rep.ReadCost.cell(condStream); median(s.NotifyPerSec) <= 0 || median(s.EvictsPerSec) <= 0 {
			t.Errorf("the reader received %.0f notifications/s and evicted %.0f/s, want some", median(s.NotifyPerSec), median(s.EvictsPerSec))
		}
		if o := rep.ReadCost.cell(condOther); median(o.NotifyPerSec) != 0 {
			t.Errorf("writes on another table reached the reader: %.0f notifications/s", median(o.NotifyPerSec))
		}
	})
	t.Run("purge", func(t *testing.T) {
		if rep.Purge, err = runPurge(ctx, e, p.purge, pr); err != nil {
			t.Fatal(err)
		}
		if pg := rep.Purge; pg.Purged != int64(p.purge.rows) || pg.Baseline.N == 0 || pg.During.N == 0 {
			t.Errorf("purged %d of %d; %d saves before, %d during", pg.Purged, p.purge.rows, pg.Baseline.N, pg.During.N)
		}
	})
	t.Run("users", func(t *testing.T) {
		if rep.Users, err = runUsers(ctx, e, p.users, pr); err != nil {
			t.Fatal(err)
		}
		if u := rep.Users; u.Rows != p.users.rows || u.Latency.N != p.users.calls || u.Latency.P99 <= 0 {
			t.Errorf("%d rows, %d calls (p99 %v), want %d rows, %d calls", u.Rows, u.Latency.N, u.Latency.P99, p.users.rows, p.users.calls)
		}
	})
	t.Run("tuning", func(t *testing.T) {
		p.tuning.entryBytes = 500
		if rep.Tuning, err = runTuning(ctx, e, p.tuning, pr); err != nil {
			t.Fatal(err)
		}
		if len(rep.Tuning.Points) != 2 {
			t.Fatalf("%d configurations, want 2", len(rep.Tuning.Points))
		}
		for _, pt := range rep.Tuning.Points {
			if pt.Requests == 0 || pt.HitRatio <= 0 || pt.HitRatio > 1 || pt.MeanEntries <= 0 {
				t.Errorf("MaxIdle %v CacheSize %d: %d requests, hit ratio %.2f, %.0f entries", pt.MaxIdle, pt.CacheSize, pt.Requests, pt.HitRatio, pt.MeanEntries)
			}
		}
	})
	t.Run("report", func(t *testing.T) {
		rep.Finished = time.Now()
		dir := t.TempDir()
		files, err := rep.write(dir)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"report.md", "results.json", "compare-300B.svg", "compare-4KB.svg", "invalidation.svg",
			"throughput.svg", "envelope.svg", "tuning-MaxIdle.svg", "tuning-CacheSize.svg"}
		for _, w := range want {
			path := filepath.Join(dir, w)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Errorf("%s: %v (wrote %v)", w, err, files)
				continue
			}
			if strings.HasSuffix(w, ".svg") && !strings.Contains(string(b), "<svg") {
				t.Errorf("%s is not an SVG", w)
			}
		}
		if len(rep.Goals) < 10 {
			t.Errorf("%d goals in the report", len(rep.Goals))
		}
		for _, g := range rep.Goals {
			if g.Met == "n/a" {
				t.Errorf("goal %q was not measured", g.Name)
			}
		}
	})
}

// TestGoalsOfAPartialRun: a run of some scenarios only (-only) judges the
// goals of the others as not measured, instead of failing.
func TestGoalsOfAPartialRun(t *testing.T) {
	r := &report{}
	r.computeGoals()
	if len(r.Goals) == 0 {
		t.Fatal("no goals listed")
	}
	for _, g := range r.Goals {
		if g.Met != "n/a" {
			t.Errorf("goal %q judged %q with nothing measured", g.Name, g.Met)
		}
	}
}
