package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/pgsession/pgsession"
)

// report is everything a run measured, and renders it.
type report struct {
	Command           string
	Quick             bool
	Started, Finished time.Time
	Timings           map[string]time.Duration
	Env               envInfo

	Compare      *compareResult      `json:",omitempty"`
	Invalidation *invalidationResult `json:",omitempty"`
	Logout       *logoutResult       `json:",omitempty"`
	Throughput   *throughputResult   `json:",omitempty"`
	Lock         *lockResult         `json:",omitempty"`
	Envelope     *envelopeResult     `json:",omitempty"`
	Memory       *memoryResult       `json:",omitempty"`
	ReadCost     *readCostResult     `json:",omitempty"`
	Purge        *purgeResult        `json:",omitempty"`
	Users        *usersResult        `json:",omitempty"`
	Tuning       *tuningResult       `json:",omitempty"`

	Goals []goal
}

type envInfo struct {
	Go, OS, Arch string
	CPUs         int
	Database     string // redacted
	Postgres     string
	Settings     map[string]string
	Redis        string
}

func (r *report) describeEnv(ctx context.Context, e *env) error {
	r.Env = envInfo{Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(), Database: redacted(e.dbURL), Settings: map[string]string{}}
	if err := e.pool.QueryRow(ctx, "SELECT version()").Scan(&r.Env.Postgres); err != nil {
		return err
	}
	for _, s := range []string{"max_connections", "shared_buffers", "synchronous_commit", "fsync", "commit_delay"} {
		var v string
		if err := e.pool.QueryRow(ctx, "SELECT current_setting($1)", s).Scan(&v); err != nil {
			return err
		}
		r.Env.Settings[s] = v
	}
	if e.redisAddr != "" {
		c, err := redis.DialContext(ctx, "tcp", e.redisAddr)
		if err != nil {
			return err
		}
		defer c.Close()
		info, err := redis.String(c.Do("INFO", "server"))
		if err != nil {
			return err
		}
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
				r.Env.Redis = "Redis " + v + " at " + e.redisAddr
			}
		}
	}
	return nil
}

// goal is one target of the project and what this run achieved.
type goal struct {
	Name     string
	Target   string
	Achieved string
	Met      string // "yes", "no", or "n/a" when not measured
	Note     string `json:",omitempty"`
}

func verdict(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

// computeGoals checks every goal against what the run measured.
func (r *report) computeGoals() {
	var gs []goal
	add := func(name, target string, measured bool, achieved string, ok bool, note string) {
		g := goal{Name: name, Target: target, Met: "n/a", Achieved: "not measured in this run", Note: note}
		if measured {
			g.Achieved, g.Met = achieved, verdict(ok)
		}
		gs = append(gs, g)
	}
	// missed adds what limits a goal to the last one, if it was missed.
	missed := func(limit string) {
		if g := &gs[len(gs)-1]; g.Met == "no" {
			g.Note = strings.TrimPrefix(g.Note+"; limit: "+limit, "; ")
		}
	}
	c := r.Compare
	ratio := func(a, b float64) (float64, bool) {
		q := a / b
		return q, !math.IsNaN(q) && !math.IsInf(q, 0)
	}
	for _, p := range payloads {
		size := map[string]string{payloadSmall.name: "300 B", payloadLarge.name: "4 KB"}[p.name]
		hit := c.med("pgsession-cache", p.name, "Get")
		q, ok := ratio(hit, c.med("cookie", p.name, "Get"))
		add("Get, cache hit vs gorilla CookieStore Get ("+size+")", "<= 0.08x", ok,
			fmt.Sprintf("%s (%s vs %s)", fmtRatio(q), fmtNs(hit), fmtNs(c.med("cookie", p.name, "Get"))), q <= 0.08, "")
		if a, b := c.cell("pgsession-cache", p.name, "Get"), c.cell("cookie", p.name, "Get"); a != nil && b != nil {
			missed(fmt.Sprintf("CPU per op of the whole process %s vs the cookie store's %s", fmtNs(a.cpuMedian()), fmtNs(b.cpuMedian())))
		}
		if a := c.cell("pgsession-cache", p.name, allocsOp); a != nil && a.Allocs != nil {
			ck := c.cell("cookie", p.name, allocsOp)
			add("Get, cache hit: allocations per op ("+size+")", "<= 15", true,
				fmt.Sprintf("%.1f allocs, %s per op (CookieStore: %s)", a.Allocs.AllocsPerOp, fmtBytes(a.Allocs.BytesPerOp), fmtAllocs(ck)), a.Allocs.AllocsPerOp <= 15, "")
		} else {
			add("Get, cache hit: allocations per op ("+size+")", "<= 15", false, "", false, "")
		}
		aes := c.med("pgsession-cache-aes", p.name, "Get")
		q, ok = ratio(aes, c.med("cookie-aes", p.name, "Get"))
		add("Get, cache hit vs CookieStore Get, both with a block key (AES) ("+size+")", "<= 0.10x", ok,
			fmt.Sprintf("%s (%s vs %s)", fmtRatio(q), fmtNs(aes), fmtNs(c.med("cookie-aes", p.name, "Get"))), q <= 0.10, "")
		// Scaling: serial ns/op over the 8 goroutines' wall ns/op, how many
		// times the throughput of one goroutine 8 of them reach.
		sp, okp := ratio(hit, c.med("pgsession-cache", p.name, "Get x8"))
		sc, okc := ratio(c.med("cookie", p.name, "Get"), c.med("cookie", p.name, "Get x8"))
		add("Get from 8 goroutines: speed-up over 1 (serial ns/op / x8 ns/op), pgsession cache hit vs CookieStore ("+size+")", ">= CookieStore's", okp && okc,
			fmt.Sprintf("%.2fx vs %.2fx (x8: %s vs %s per op)", sp, sc, fmtNs(c.med("pgsession-cache", p.name, "Get x8")), fmtNs(c.med("cookie", p.name, "Get x8"))), sp >= sc, "")
		q, ok = ratio(hit, c.med("redistore", p.name, "Get"))
		add("Get, cache hit vs redistore Get ("+size+")", "<= 0.05x", ok, fmtRatio(q), q <= 0.05, "")
		q, ok = ratio(c.med("pgsession-cache", p.name, "Save unchanged"), hit)
		add("Save unchanged vs cache-hit Get ("+size+")", "<= 2x", ok, fmtRatio(q), q <= 2, "")
		q, ok = ratio(c.med("pgsession-cache", p.name, "Save changed"), c.med("raw-pgx-notify", p.name, "Save changed"))
		cells := fmt.Sprintf("%s (%s vs %s)", fmtRatio(q), fmtNs(c.med("pgsession-cache", p.name, "Save changed")), fmtNs(c.med("raw-pgx-notify", p.name, "Save changed")))
		if pairs := c.pairs(p.name); len(pairs) > 0 {
			// The goal is judged on the pairs: see pairSaveChanged.
			q, ok = median(pairs), true
			add("Save changed vs raw upsert with pg_notify ("+size+")", "<= 1.1x", ok,
				fmt.Sprintf("%s, the median of %d pairs of alternating slices of %s, run after the rounds (quartiles %.2fx-%.2fx; the cells' medians: %s)",
					fmtRatio(q), len(pairs), c.Duration/pairSlices, quantileOf(pairs, 0.25), quantileOf(pairs, 0.75), cells), q <= 1.1, "")
		} else {
			add("Save changed vs raw upsert with pg_notify ("+size+")", "<= 1.1x", ok, cells, q <= 1.1, "")
		}
		if a, b := c.cell("pgsession-cache", p.name, "Save changed"), c.cell("raw-pgx-notify", p.name, "Save changed"); a != nil && b != nil {
			missed(fmt.Sprintf("Save runs the floor's statement plus %s more CPU per op in this process (%s vs %s: encoding, cookie signing, the cache update); the rest of the gap is the round trip's noise, so rerun before trusting it",
				fmtNs(a.cpuMedian()-b.cpuMedian()), fmtNs(a.cpuMedian()), fmtNs(b.cpuMedian())))
		}
	}

	if inv := r.Invalidation; inv != nil {
		add("Invalidation latency p99, commit on A to eviction on B", "<= 5 ms", true,
			fmt.Sprintf("%s from Save's return (%s from its call; p50 %s; %d lost)", fmtDur(inv.FromReturn.P99), fmtDur(inv.FromCall.P99), fmtDur(inv.FromReturn.P50), inv.Lost),
			inv.FromReturn.P99 <= 5*time.Millisecond && inv.Lost == 0, "")
	} else {
		add("Invalidation latency p99, commit on A to eviction on B", "<= 5 ms", false, "", false, "")
	}

	for _, g := range []struct {
		mode   pgsession.Coherence
		target float64
		limit  string
	}{
		{pgsession.CoherenceRevocations, 0.9, "saves send no notification here; what still grows with the listeners is their probes (each listener's every ListenLease/4, delivered to every listener: deliveries grow with the square of the count) and, on this machine, the listeners' own client work sharing its CPUs with the server"},
		{pgsession.CoherenceAll, 0.5, "every notifying commit takes the cluster-wide notify lock and wakes every listening backend, and every listener's connection reads every notification; group commit pays that once per batch, not per save"},
	} {
		name := fmt.Sprintf("%s: write throughput with 50 listening instances vs 1", modeName(g.mode.String()))
		target := fmt.Sprintf(">= %.1fx", g.target)
		env := r.Envelope
		p, first := env.at(g.mode.String(), 50), (*envelopePoint)(nil)
		if cs := env.counts(); len(cs) > 0 {
			first = env.point(g.mode.String(), cs[0])
		}
		if p == nil || first == nil || p == first {
			add(name, target, false, "", false, "")
			continue
		}
		note := ""
		if n := p.listeners(); n != 50 {
			name = fmt.Sprintf("%s: write throughput with %d listening instances vs %d", modeName(g.mode.String()), n, first.listeners())
			note = fmt.Sprintf("50 not measured: the largest count at or below it was %d", n)
		}
		q := p.ratio()
		add(name, target, true, fmt.Sprintf("%s (median of per-round ratios; %.0f vs %.0f saves/s, medians)", fmtRatio(q), p.median(), first.median()), q >= g.target, note)
		missed(fmt.Sprintf("%s. CPU per save went from %s to %s (this process + server), with %.2f notifications per save (%d writers' batches); here all of it shares this machine's %d CPUs",
			g.limit, medianCPU(first.CPU), medianCPU(p.CPU), median(p.Notices), env.Writers, r.Env.CPUs))
	}

	if m := r.Memory; m != nil {
		add(fmt.Sprintf("Cache memory per entry beyond the payload (%d entries)", m.Entries), "<= 200 B", true,
			fmt.Sprintf("%.0f B (%.0f B per entry with a %d B payload); the golang-lru floor, simplelru with a %d B value alone: %.0f B", m.Overhead, m.PerEntry, m.PayloadBytes, m.LRUValueBytes, m.LRUFloor), m.Overhead <= 200, "")
		missed(fmt.Sprintf("golang-lru's list element and map slot holding the entry cost %.0f B by themselves; the rest is the data's rounding up to a size class and what the store keeps besides; -memprofile shows the split", m.LRUFloor))
	} else {
		add("Cache memory per entry beyond the payload", "<= 200 B", false, "", false, "")
	}

	t := r.Throughput
	if b, u := t.cell(modeBatched, 32), t.cell(modeUpsert, 32); b != nil && u != nil {
		q := b.median() / u.median()
		add("32 writers: pgsession batched (with invalidation) vs plain upsert without notification", ">= 1.0x", true,
			fmt.Sprintf("%s (%.0f vs %.0f saves/s)", fmtRatio(q), b.median(), u.median()), q >= 1.0, "")
		missed("one batch in flight per Store, and its notifying commit serializes on the server's notify lock")
	} else {
		add("32 writers: pgsession batched vs plain upsert without notification", ">= 1.0x", false, "", false, "")
	}
	if l := r.Lock; l != nil && l.P99Ratio > 0 {
		a, b := l.phase(phaseFree), l.phase(phaseLocked)
		add(fmt.Sprintf("%d writers' Save p99 while another session's row is locked elsewhere vs without", l.Writers), "< 2x", true,
			fmt.Sprintf("%s (%s vs %s; %.0f vs %.0f saves/s)", fmtRatio(l.P99Ratio), fmtDur(b.Latency.P99), fmtDur(a.Latency.P99), b.median(), a.median()),
			l.P99Ratio < 2, "")
		lw := l.Locked
		add(fmt.Sprintf("Save of the locked session, %v request deadline: fails with the deadline's error, at most %v late", l.Deadline, lockLateness), "every attempt", true,
			fmt.Sprintf("%d of %d attempts (%d with ErrUncertain, %d succeeded, %d other errors); slowest %s", lw.Deadline, lw.Attempts, lw.Uncertain, lw.Succeeded, lw.Other, fmtDur(lw.Latency.Max)),
			lw.Attempts > 0 && lw.Deadline == lw.Attempts && lw.Succeeded == 0 && lw.Late == 0, "")
	} else {
		add("Writers' Save p99 while another session's row is locked elsewhere vs without", "< 2x", false, "", false, "")
		add("Save of the locked session under a request deadline: fails with the deadline's error, promptly", "every attempt", false, "", false, "")
	}
	if b, u := t.cell(modeBatched, 1), t.cell(modeUnbatched, 1); b != nil && u != nil {
		q := float64(b.Latency.P50) / float64(u.Latency.P50)
		add("1 writer: Save latency batched vs MaxBatch 1 (p50)", "<= 1.1x", true,
			fmt.Sprintf("%s (%s vs %s)", fmtRatio(q), fmtDur(b.Latency.P50), fmtDur(u.Latency.P50)), q <= 1.1, "")
	} else {
		add("1 writer: Save latency batched vs MaxBatch 1", "<= 1.1x", false, "", false, "")
	}

	if p := r.Purge; p != nil {
		q := float64(p.During.P99) / float64(p.Baseline.P99)
		add(fmt.Sprintf("Save p99 while purging %d rows vs without", p.Rows), "<= 2x", true,
			fmt.Sprintf("%s (%s vs %s); %.0f rows/s purged", fmtRatio(q), fmtDur(p.During.P99), fmtDur(p.Baseline.P99), p.RowsPerSec), q <= 2, "")
		missed("the purge's deletes (WAL, index maintenance) compete with the saves for the server's CPU and WAL flushes")
	} else {
		add("Save p99 while purging vs without", "<= 2x", false, "", false, "")
	}
	if u := r.Users; u != nil {
		add(fmt.Sprintf("Store.Sessions(user) p99, %d rows in the table", u.Rows), "< "+usersGoal.String()+" (at 1M rows)", true,
			fmt.Sprintf("%s (p50 %s, max %s, %d calls)", fmtDur(u.Latency.P99), fmtDur(u.Latency.P50), fmtDur(u.Latency.Max), u.Latency.N), u.Latency.P99 < usersGoal, "")
	} else {
		add("Store.Sessions(user) p99, 1M rows in the table", "< "+usersGoal.String(), false, "", false, "")
	}
	r.Goals = gs
}

// fmtAllocs formats a cell's allocations per op, or "—".
func fmtAllocs(c *compareCell) string {
	if c == nil || c.Allocs == nil {
		return "—"
	}
	return fmt.Sprintf("%.1f allocs, %s", c.Allocs.AllocsPerOp, fmtBytes(c.Allocs.BytesPerOp))
}

func fmtRatio(q float64) string {
	switch {
	case math.IsNaN(q) || math.IsInf(q, 0):
		return "n/a"
	case q < 0.1:
		return fmt.Sprintf("%.3fx", q)
	}
	return fmt.Sprintf("%.2fx", q)
}

// fmtNs formats nanoseconds per operation.
func fmtNs(ns float64) string {
	switch {
	case math.IsNaN(ns):
		return "—"
	case ns < 1000:
		return fmt.Sprintf("%.0f ns", ns)
	case ns < 1e6:
		return fmt.Sprintf("%.2f µs", ns/1e3)
	}
	return fmt.Sprintf("%.2f ms", ns/1e6)
}

func fmtBytes(b float64) string {
	switch {
	case b < 1<<10:
		return fmt.Sprintf("%.0f B", b)
	case b < 1<<20:
		return fmt.Sprintf("%.1f KiB", b/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", b/(1<<20))
}

// write writes the report's files to dir and returns their names.
func (r *report) write(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	r.computeGoals()
	charts, err := r.charts(dir)
	if err != nil {
		return nil, fmt.Errorf("charts: %w", err)
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, err
	}
	files := []string{filepath.Join(dir, "report.md"), filepath.Join(dir, "results.json")}
	if err := os.WriteFile(files[0], []byte(r.markdown(charts)), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(files[1], js, 0o644); err != nil {
		return nil, err
	}
	for _, c := range charts {
		files = append(files, filepath.Join(dir, c))
	}
	return files, nil
}

// md builds a markdown document.
type md struct{ strings.Builder }

func (m *md) p(format string, args ...any) {
	fmt.Fprintf(m, format, args...)
	m.WriteString("\n\n")
}

func (m *md) table(head []string, rows [][]string) {
	m.WriteString("| " + strings.Join(head, " | ") + " |\n|")
	for range head {
		m.WriteString(" --- |")
	}
	m.WriteString("\n")
	for _, r := range rows {
		m.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	m.WriteString("\n")
}

func (m *md) chart(charts map[string]string, key, alt string) {
	if f, ok := charts[key]; ok {
		m.p("![%s](%s)", alt, f)
	}
}

func (r *report) markdown(charts map[string]string) string {
	var m md
	m.p("# pgsession benchmark report")
	m.p("Run `%s`, %s to %s (%s).", r.Command, r.Started.Format(time.RFC3339), r.Finished.Format("15:04:05"), r.Finished.Sub(r.Started).Round(time.Second))
	m.p("Machine: %s/%s, %d CPUs, %s. Database: %s (%s). %s.", r.Env.OS, r.Env.Arch, r.Env.CPUs, r.Env.Go, r.Env.Database, r.Env.Postgres, r.Env.Redis)
	var settings []string
	for k, v := range r.Env.Settings {
		settings = append(settings, k+" = "+v)
	}
	sort.Strings(settings)
	m.p("Server settings: %s.", strings.Join(settings, ", "))
	m.p("All times are medians of repeated rounds on this machine, in this run; compare ratios, not absolute times, and rerun before trusting a close one. How each scenario measures is in [bench/README.md](../README.md).")

	m.p("## Goals")
	var rows [][]string
	for _, g := range r.Goals {
		a := g.Achieved
		if g.Note != "" {
			a += "; " + g.Note
		}
		rows = append(rows, []string{g.Name, g.Target, a, g.Met})
	}
	m.table([]string{"goal", "target", "achieved", "met"}, rows)
	if h := r.hotSummary(); h != "" {
		m.p("HOT ratio (n_tup_hot_upd / n_tup_upd) of Save changed: %s.", h)
	}

	r.mdCompare(&m, charts)
	r.mdInvalidation(&m, charts)
	r.mdLogout(&m)
	r.mdThroughput(&m, charts)
	r.mdLock(&m)
	r.mdEnvelope(&m, charts)
	r.mdMemory(&m)
	r.mdReadCost(&m)
	r.mdPurge(&m)
	r.mdUsers(&m)
	r.mdTuning(&m, charts)

	m.p("## Scenario run times")
	rows = nil
	for _, s := range scenarioNames {
		if d, ok := r.Timings[s]; ok {
			rows = append(rows, []string{s, d.Round(100 * time.Millisecond).String()})
		}
	}
	m.table([]string{"scenario", "time"}, rows)
	return m.String()
}

func (r *report) mdCompare(m *md, charts map[string]string) {
	c := r.Compare
	if c == nil {
		return
	}
	m.p("## Store comparison")
	m.p("Same session values for every store, %d rounds of %v per cell, median ns per operation and, in brackets, the ratio to pgsession with its cache. `Get x8` is 8 goroutines at once: wall time over all their operations (the inverse of throughput).", c.Repeats, c.Duration)
	var rows [][]string
	for _, s := range c.Stores {
		rows = append(rows, []string{"`" + s.Name + "`", s.About})
	}
	m.table([]string{"store", "what it is"}, rows)
	for _, p := range c.Payloads {
		m.p("### Payload %s (%d bytes as pgsession encodes it)", p.Name, p.Bytes)
		rows = nil
		var cpuRows [][]string
		for _, s := range c.Stores {
			row := []string{"`" + s.Name + "`"}
			cpuRow := []string{"`" + s.Name + "`"}
			for _, op := range c.Ops {
				cell := c.cell(s.Name, p.Name, op)
				if cell == nil {
					row, cpuRow = append(row, "—"), append(cpuRow, "—")
					continue
				}
				base := c.med("pgsession-cache", p.Name, op)
				row = append(row, fmt.Sprintf("%s (%s)", fmtNs(cell.median()), fmtRatio(cell.median()/base)))
				cpuRow = append(cpuRow, fmtNs(cell.cpuMedian()))
			}
			rows, cpuRows = append(rows, row), append(cpuRows, cpuRow)
		}
		m.table(append([]string{"store"}, c.Ops...), rows)
		if p.Name == payloadLarge.name {
			m.p("The cookie store's 4 KB cookie is over the 4096 bytes a browser keeps: it was measured with securecookie's MaxLength raised, and would not work in a browser.")
		}
		m.p("CPU time of the whole process per operation (all threads and GC; the database's and Redis's work is not in it):")
		m.table(append([]string{"store"}, c.Ops...), cpuRows)
		rows = nil
		for _, s := range c.Stores {
			if cell := c.cell(s.Name, p.Name, allocsOp); cell != nil && cell.Allocs != nil {
				a := cell.Allocs
				rows = append(rows, []string{"`" + s.Name + "`", fmt.Sprintf("%.1f", a.AllocsPerOp), fmtBytes(a.BytesPerOp), fmt.Sprint(a.Ops)})
			}
		}
		if len(rows) > 0 {
			m.p("Heap allocations of one %s (serial), after the rounds: runtime.MemStats Mallocs and TotalAlloc around a loop of about %v, divided by its ops. They count the whole process, so the rows that wait for a server include its client library's work.", allocsOp, c.Duration)
			m.table([]string{"store", "allocs/op", "bytes/op", "ops"}, rows)
		}
		m.chart(charts, "compare-"+p.Name, "store comparison, "+p.Name)
	}
	rows = nil
	for _, p := range c.Payloads {
		for _, s := range c.Stores {
			cell := c.cell(s.Name, p.Name, hotOp)
			if cell == nil || cell.HOT == nil {
				continue
			}
			h := cell.HOT
			rows = append(rows, []string{"`" + s.Name + "`", p.Name, fmt.Sprint(h.Ops), fmt.Sprintf("%.2f", h.updatesPerOp()), fmt.Sprint(h.Inserts),
				fmt.Sprint(h.Updates), fmt.Sprint(h.HotUpdates), fmt.Sprintf("%.3f", h.Ratio), fmt.Sprint(h.Unsettled)})
		}
	}
	if len(rows) > 0 {
		m.p("### HOT updates of Save changed")
		m.p("The table's counters in pg_stat_user_tables, read around every Save changed cell (all rounds), each time after every idle connection that wrote flushed its statistics and the counters stopped changing: rows updated and inserted per op (1 and 0: every Save changed updates its existing row), and the share of HOT updates, which touch no index. pgsession keeps the stored expiry while it is within the refresh lag, and its tables have fillfactor 75; the raw floor writes a new `expires_at` (indexed) every time, so none of its updates can be HOT; scs keeps its expiry (no idle timeout), fillfactor 100. Unsettled: snapshots whose counters still moved after %v.", statsSettleLimit)
		m.table([]string{"store", "payload", "ops", "rows updated per op", "rows inserted", "n_tup_upd", "n_tup_hot_upd", "HOT ratio", "unsettled"}, rows)
	}
}

// hotSummary lists the HOT ratio of Save changed per store and payload.
func (r *report) hotSummary() string {
	c := r.Compare
	if c == nil {
		return ""
	}
	var parts []string
	for _, s := range c.Stores {
		var per []string
		for _, p := range c.Payloads {
			if cell := c.cell(s.Name, p.Name, hotOp); cell != nil && cell.HOT != nil {
				per = append(per, fmt.Sprintf("%.3f at %s", cell.HOT.Ratio, p.Name))
			}
		}
		if len(per) > 0 {
			parts = append(parts, "`"+s.Name+"` "+strings.Join(per, ", "))
		}
	}
	return strings.Join(parts, "; ")
}

func (r *report) mdInvalidation(m *md, charts map[string]string) {
	inv := r.Invalidation
	if inv == nil {
		return
	}
	m.p("## Invalidation latency between two instances")
	m.p("Two Stores on separate pools, one table. Per sample: B caches the session, A saves it changed, a poller watches B's `Stats().NotifyEvictions`, sleeping between looks with the Go timer (%v per look on average: eviction times are upper bounds, late by up to that). A plain pgx connection LISTENing on the same channel timestamps each notification's arrival with no polling: the floor. %d samples, %d lost (nothing within %v); in %d the eviction was already done when A's Save returned (counted as 0).",
		inv.PollPeriod.Round(time.Microsecond), inv.FromReturn.N+inv.Lost, inv.Lost, evictionTimeout, inv.Early)
	rows := [][]string{
		distRow("commit acknowledged to A (Save returned) -> evicted on B", inv.FromReturn),
		distRow("A's Save called -> evicted on B", inv.FromCall),
		distRow("commit acknowledged to A -> notification at a plain LISTEN connection", inv.Delivered),
		distRow("A's Save called -> notification at a plain LISTEN connection", inv.DeliveredFromCall),
		distRow("A's Save itself", inv.Save),
	}
	m.table([]string{"interval", "p50", "p90", "p99", "max"}, rows)
	m.chart(charts, "invalidation", "invalidation latency CDF")
}

func (r *report) mdLogout(m *md) {
	l := r.Logout
	if l == nil {
		return
	}
	m.p("## Logout window between two instances")
	m.p("Two Stores on separate pools, one table, default Config. Per trial: a session logged in on A and cached on B (a second read on B checked to be a cache hit); then A, on a request with that cookie, logs it out (`Options.MaxAge = -1`, Save) or saves a new value; from the instant A's Save returns, B is asked for the session with the cookie from before, in a tight loop, until it refuses it (logout: a new session; change: the new value). Served: trials whose first replay still got the old session or the old value. Window: A's Save returned -> B's first refusal, 0 when the first replay was refused; open windows: the same over the served trials only. Lost: still served %v after A's Save returned.", replayTimeout)
	var rows [][]string
	for _, row := range l.Rows {
		us := func(d time.Duration) string { return fmt.Sprint(d.Microseconds()) }
		rows = append(rows, []string{row.Action, fmt.Sprint(row.Trials),
			fmt.Sprintf("%d (%.1f%%)", row.Served, 100*row.servedFraction()),
			us(row.Window.P50), us(row.Window.P99), us(row.Window.Max),
			us(row.Open.P50), fmt.Sprint(row.Replays), fmt.Sprint(row.MaxRun), fmt.Sprint(row.Lost), us(row.Save.P50)})
	}
	m.table([]string{"action on A", "trials", "first replay served", "window p50 (µs)", "p99 (µs)", "max (µs)", "open windows p50 (µs)", "replays served", "most in one trial", "lost", "A's Save p50 (µs)"}, rows)
}

func distRow(name string, d dist) []string {
	return []string{name, fmtDur(d.P50), fmtDur(d.P90), fmtDur(d.P99), fmtDur(d.Max)}
}

func (r *report) mdThroughput(m *md, charts map[string]string) {
	t := r.Throughput
	if t == nil {
		return
	}
	m.p("## Write throughput")
	m.p("Saves per second (median of %d rounds of %v), each writer saving its own session (300 B) over and over; one pool of %d connections for all; another instance LISTENs on the table's channel. In brackets: ratio to the plain upsert at the same writer count.", t.Repeats, t.Duration, t.PoolConns)
	head := []string{"writers"}
	head = append(head, t.Modes...)
	var rows, latRows [][]string
	for _, n := range t.Writers {
		row := []string{fmt.Sprint(n)}
		lat := []string{fmt.Sprint(n)}
		base := t.cell(modeUpsert, n)
		for _, mode := range t.Modes {
			c := t.cell(mode, n)
			if c == nil {
				row, lat = append(row, "—"), append(lat, "—")
				continue
			}
			row = append(row, fmt.Sprintf("%.0f/s (%s)", c.median(), fmtRatio(c.median()/base.median())))
			lat = append(lat, fmt.Sprintf("%s / %s", fmtDur(c.Latency.P50), fmtDur(c.Latency.P99)))
		}
		rows, latRows = append(rows, row), append(latRows, lat)
	}
	m.table(head, rows)
	m.p("Save latency, p50 / p99, over all rounds:")
	m.table(head, latRows)
	var cpuRows [][]string
	for _, n := range t.Writers {
		row := []string{fmt.Sprint(n)}
		for _, mode := range t.Modes {
			if c := t.cell(mode, n); c != nil {
				row = append(row, medianCPU(c.CPU).String())
			} else {
				row = append(row, "—")
			}
		}
		cpuRows = append(cpuRows, row)
	}
	m.p("CPU time per save, this process + the database server (all postgres processes on this machine; `?` when the server is elsewhere), median of the rounds:")
	m.table(head, cpuRows)
	if n, u := t.cell(modeNotify, 1), t.cell(modeUpsert, 1); n != nil && u != nil {
		m.p("The cost of NOTIFY alone, one writer: %s the throughput of the plain upsert.", fmtRatio(n.median()/u.median()))
	}
	m.chart(charts, "throughput", "write throughput")
}

func (r *report) mdLock(m *md) {
	l := r.Lock
	if l == nil {
		return
	}
	m.p("## Row lock held elsewhere")
	m.p("One Store, default Config (group commit, MaxBatch %d). %d writers each save a changed value to a session of their own, over and over, for %v per phase and round; %d rounds, the order of the phases alternating. With the lock, another connection holds `SELECT ... FOR UPDATE` on one more session's row in an open transaction, and one more goroutine keeps saving that session, each Save with a request deadline of %v; the lock is released once the phase's writers stopped and that goroutine's last attempt ended. Saves/s: median of the rounds; latency: every save of every round.",
		l.MaxBatch, l.Writers, l.Duration, l.Repeats, l.Deadline)
	var rows [][]string
	for _, ph := range l.Phases {
		rows = append(rows, []string{ph.Phase, fmt.Sprintf("%.0f/s", ph.median()), fmt.Sprint(ph.Saves),
			fmtDur(ph.Latency.P50), fmtDur(ph.Latency.P99), fmtDur(ph.Latency.Max),
			fmt.Sprintf("%.3f", ph.HOT.Ratio), fmt.Sprintf("%d (%d writes)", ph.Batches, ph.BatchedWrites), fmt.Sprint(ph.LockWaits)})
	}
	m.table([]string{"phase", "writers' saves/s", "saves", "p50", "p99", "max", "HOT ratio", "batches (writes in them)", "lock waits (Stats)"}, rows)
	m.p("Writers' p99 with the lock over without: %s (goal < 2x).", fmtRatio(l.P99Ratio))
	lw := l.Locked
	m.p("The locked session's writer: %d attempts; %d failed with an error wrapping context.DeadlineExceeded, %d of all wrapping pgsession.ErrUncertain (sent, may still commit); %d other errors%s; %d succeeded. Save's return after its call: p50 %s, max %s; %d more than %v after the deadline. After the lock was released, the row gained %d versions: writes whose Save had returned an error (ErrUncertain) that committed then. (pgx closes a connection whose context ended and sends the server a cancel request; the lock went as soon as the last attempt returned, so a write commits when its cancel lands after that.)",
		lw.Attempts, lw.Deadline, lw.Uncertain, lw.Other, map[bool]string{true: " (first: " + lw.OtherErr + ")", false: ""}[lw.OtherErr != ""], lw.Succeeded,
		fmtDur(lw.Latency.P50), fmtDur(lw.Latency.Max), lw.Late, lockLateness, lw.CommittedLater)
}

func (r *report) mdEnvelope(m *md, charts map[string]string) {
	l := r.Envelope
	if l == nil {
		return
	}
	m.p("## How far one PostgreSQL goes: the scale envelope")
	m.p("Two writing Stores on one table, one per coherence mode (`CoherenceAll`: every save notifies; `CoherenceRevocations`: saves do not, logouts do), cache off, group commit (MaxBatch %d), sharing a pool of 3; %d writers, each saving its own session changed, over and over. N listening Stores in this process stand for N instances, each with a listening connection of its own (its own ListenConnString, `application_name=pgsbench_listener_<i>`). Each of %d rounds sweeps the counts upwards and closes back down; at each count both modes run for %v each, the order alternating. Saves/s: median of the rounds, in brackets the slowest and fastest round; vs first: median of each round's ratio to the same round's smallest count, in brackets the lowest and highest. Notifications per save: what the first listener received during the cell over the saves (median of the rounds): a batch's notification carries many sessions; in `revocations` only the listeners' own probes remain. max_connections is %d and %d client connections were free at the start: `max` is that, less this scenario's own %d and %d left for other clients, = %d.",
		l.MaxBatch, l.Writers, l.Repeats, l.Duration, l.MaxConnections, l.Free, envelopeOwnConns, l.Spare, l.Free-envelopeOwnConns-l.Spare)
	m.p("%s", serverCPUNote(l.OwnServerCPU))
	head := []string{"listeners asked", "listeners"}
	for _, mode := range l.Modes {
		head = append(head, mode+" saves/s", "vs first", "CPU per save: this process + server", "other clients' server CPU per save", "notifications per save")
	}
	var rows, latRows [][]string
	for _, n := range l.counts() {
		row := []string{fmtCount(n), ""}
		lat := []string{fmtCount(n), ""}
		for _, mode := range l.Modes {
			p := l.point(mode, n)
			if p == nil {
				row, lat = append(row, "—", "—", "—", "—", "—"), append(lat, "—", "—", "—")
				continue
			}
			row[1], lat[1] = fmt.Sprint(p.listeners()), fmt.Sprint(p.listeners())
			if lo, hi := slices.Min(p.Listeners), slices.Max(p.Listeners); lo != hi {
				row[1] = fmt.Sprintf("%d-%d", lo, hi)
			}
			row = append(row, fmt.Sprintf("%.0f/s (%.0f-%.0f)", p.median(), slices.Min(p.PerSec), slices.Max(p.PerSec)),
				fmt.Sprintf("%s (%s-%s)", fmtRatio(p.ratio()), fmtRatio(slices.Min(p.Ratio)), fmtRatio(slices.Max(p.Ratio))), medianCPU(p.CPU).String(),
				fmtOthers(p.Others), fmt.Sprintf("%.3f", median(p.Notices)))
			lat = append(lat, fmt.Sprintf("%s / %s", fmtDur(p.Latency.FromReturn.P50), fmtDur(p.Latency.FromReturn.P99)),
				fmt.Sprintf("%s / %s", fmtDur(p.Latency.FromCall.P50), fmtDur(p.Latency.FromCall.P99)), fmt.Sprintf("%d (%d lost)", p.Latency.FromReturn.N, p.Latency.Lost))
		}
		rows, latRows = append(rows, row), append(latRows, lat)
	}
	m.table(head, rows)
	if len(l.Idle) > 0 {
		var parts []string
		for _, id := range l.Idle {
			c := medianCPU(id.CPU)
			f := func(d time.Duration) string {
				if d < 0 {
					return "?"
				}
				return fmt.Sprintf("%.1f%%", 100*d.Seconds())
			}
			n := 0
			if len(id.Listeners) > 0 {
				n = slices.Min(id.Listeners)
			}
			parts = append(parts, fmt.Sprintf("%d: %s + %s", n, f(c.Client), f(c.Server)))
		}
		m.p("With nothing written (a cell at each count, each round, medians), what the listening Stores cost by themselves, in CPU time per second of one core, this process + server, by listeners: %s.", strings.Join(parts, "; "))
	}
	if p := l.at(l.Modes[0], envelopeMax); p != nil {
		n := float64(p.listeners())
		perSec := 4 / pgsession.DefaultListenLease.Seconds()
		m.p("Probes: every listening Store sends one on the table's channel every ListenLease / 4 (%v at the default lease), and each reaches every listener: at %d listeners, %.0f probes/s and %.0f deliveries/s (growing with the square of the count), in both modes, with no save behind them.",
			pgsession.DefaultListenLease/4, p.listeners(), n*perSec, n*n*perSec)
	}
	head = []string{"listeners asked", "listeners"}
	for _, mode := range l.Modes {
		what := notifiedChange
		if p := l.at(mode, envelopeMax); p != nil {
			what = p.Notified
		}
		head = append(head, fmt.Sprintf("%s: %s, from return p50 / p99", mode, what), "from call p50 / p99", "samples")
	}
	m.p("Invalidation latency to one listener, with no other write going on (a few samples per round, all rounds): in `all` a save's, in `revocations` a logout's, since saves are not notified there. From the return of the writer's Save (its commit acknowledged) to the eviction, and from its call:")
	m.table(head, latRows)
	rd := l.Reads
	m.p("Cache-miss reads: a Store with its cache off on a pool of %d, %d goroutines each reading sessions in turn among %d (every Get a Load, checked), once per round at the smallest count: %.0f reads/s (median; rounds %s), CPU per read %s.",
		rd.PoolConns, rd.Readers, rd.Sessions, rd.median(), fmtRates(rd.PerSec), medianCPU(rd.CPU))
	m.p("### How far one PostgreSQL goes")
	m.p("Per mode, at the smallest count, 50 instances (or the nearest below) and the most the server took; DB CPU per write as above.")
	head, rows = l.table()
	m.table(head, rows)
	m.chart(charts, "envelope", "scale envelope")
}

// serverCPUNote says whose work the server's CPU time counts.
func serverCPUNote(own bool) string {
	if own {
		return "The server's CPU is that of the backends serving this run's connections (found by their client ports) and of the server's background processes (WAL writer, checkpointer, autovacuum): other clients' queries on the same server are left out, and shown apart as other clients' server CPU (every other postgres process, per save): the noise they added."
	}
	return "The server's CPU is every postgres process on this machine, other clients' work included."
}

// fmtOthers is the median of per-round durations, or ? when unknown.
func fmtOthers(ds []time.Duration) string {
	var known []time.Duration
	for _, d := range ds {
		if d >= 0 {
			known = append(known, d)
		}
	}
	if len(known) == 0 {
		return "?"
	}
	return fmtDur(medianDuration(known))
}

// fmtRates lists per-round rates.
func fmtRates(xs []float64) string {
	var parts []string
	for _, x := range xs {
		parts = append(parts, fmt.Sprintf("%.0f", x))
	}
	return strings.Join(parts, ", ")
}

func (r *report) mdMemory(m *md) {
	mem := r.Memory
	if mem == nil {
		return
	}
	m.p("## Memory per cached entry")
	m.p("HeapAlloc after two GCs: H0 with the Store open and its cache empty (after a warm-up and Clear), H1 with %d sessions cached (each saved through the Store; the suite keeps nothing of them), H2 after Clear dropped them again.", mem.Entries)
	m.table([]string{"measure", "bytes per entry", "beyond the payload (" + fmt.Sprint(mem.PayloadBytes) + " B)"}, [][]string{
		{"(H1 - H0) / entries: what caching costs", fmt.Sprintf("%.0f", mem.PerEntry), fmt.Sprintf("%.0f", mem.Overhead)},
		{"(H1 - H2) / entries: what dropping gives back (Go maps do not shrink)", fmt.Sprintf("%.0f", mem.FreedPerEntry), fmt.Sprintf("%.0f", mem.FreedOverhead)},
		{fmt.Sprintf("golang-lru floor: `simplelru.LRU[uint64, V]` alone, V of %d B (the store's entry), %d entries", mem.LRUValueBytes, mem.Entries), fmt.Sprintf("%.0f", mem.LRUFloor), "—"},
	})
	m.p("Beyond the payload, less the golang-lru floor: %.0f B per entry (the data's rounding up to a size class, the stripes, whatever else an entry keeps).", mem.Overhead-mem.LRUFloor)
}

func (r *report) mdReadCost(m *md) {
	rc := r.ReadCost
	if rc == nil {
		return
	}
	m.p("## Read cost while invalidations stream in")
	m.p("Cache-hit Get of a few hot sessions from one goroutine, %d rounds of %v per condition, conditions alternating. The background writer saves at %.0f/s on another Store: on a table of its own (the reader receives nothing), or on the reader's table, sessions the reader has cached (each write evicts one).", rc.Repeats, rc.Duration, rc.Rate)
	var rows [][]string
	idle := rc.cell(condIdle).median()
	for _, c := range rc.Cells {
		rows = append(rows, []string{c.Cond, fmtNs(c.median()), fmtRatio(c.median() / idle),
			fmt.Sprintf("%.0f", median(c.WritesPerSec)), fmt.Sprintf("%.0f", median(c.NotifyPerSec)), fmt.Sprintf("%.0f", median(c.EvictsPerSec)), fmt.Sprint(c.Misses)})
	}
	m.table([]string{"condition", "Get ns/op", "vs idle", "background writes/s", "notifications/s at the reader", "evictions/s", "reader cache misses"}, rows)
	if o, s := rc.cell(condOther), rc.cell(condStream); o != nil && s != nil {
		m.p("Invalidations vs the same writes on another table: %s.", fmtRatio(s.median()/o.median()))
	}
}

func (r *report) mdPurge(m *md) {
	p := r.Purge
	if p == nil {
		return
	}
	m.p("## Purge under load")
	m.p("%d expired rows inserted with generate_series and VACUUM ANALYZEd (%s); %d goroutines saving through the Store, first without a purge, then while `PurgeExpired` ran. Purged %d rows in %s: %.0f rows/s.",
		p.Rows, p.InsertTime.Round(time.Millisecond), p.Savers, p.Purged, p.PurgeTime.Round(time.Millisecond), p.RowsPerSec)
	m.table([]string{"phase", "saves", "p50", "p90", "p99", "max"}, [][]string{
		{"without purge", fmt.Sprint(p.Baseline.N), fmtDur(p.Baseline.P50), fmtDur(p.Baseline.P90), fmtDur(p.Baseline.P99), fmtDur(p.Baseline.Max)},
		{"during purge", fmt.Sprint(p.During.N), fmtDur(p.During.P50), fmtDur(p.During.P90), fmtDur(p.During.P99), fmtDur(p.During.Max)},
	})
}

func (r *report) mdTuning(m *md, charts map[string]string) {
	t := r.Tuning
	if t == nil {
		return
	}
	m.p("## Tuning: MaxIdle and CacheSize")
	m.p("%d sessions, Zipf popularity (exponent %.2f), %.1f requests per simulated second: %.0f%% read only, %.0f%% save a changed session, %.0f%% save it unchanged. Mean think time of the most popular session %s, of the median one %s. Each configuration is a real Store run for %v simulated (%v of warm-up, then %v measured) on an injected clock running %.0f times faster than real time (see the README). Cache memory is mean entries times %.0f bytes per entry (payload included, from the memory scenario).",
		t.Sessions, t.Zipf, t.Rate, 100*t.Reads, 100*t.Changes, 100*(1-t.Reads-t.Changes), fmtDur(t.TopThink), t.MedianThink.Round(time.Second),
		t.Warmup+t.SimTime, t.Warmup, t.SimTime, t.Speedup, t.EntryBytes)
	for _, sweep := range []string{"MaxIdle", "CacheSize"} {
		var rows [][]string
		for _, p := range t.Points {
			if !p.in(sweep) {
				continue
			}
			rows = append(rows, []string{p.MaxIdle.String(), fmt.Sprint(p.CacheSize), fmt.Sprintf("%.1f%%", 100*p.HitRatio),
				fmt.Sprintf("%.2f", p.DBReadsPerSec), fmt.Sprintf("%.2f", p.DBWritesPerSec),
				fmt.Sprintf("%.0f / %d", p.MeanEntries, p.MaxEntries), fmtBytes(p.CacheBytes), fmt.Sprint(p.Scavenged),
				fmt.Sprintf("%s / %s", fmtDur(p.LagP99), fmtDur(p.LagMax))})
		}
		if len(rows) == 0 {
			continue
		}
		m.p("### Sweeping %s", sweep)
		m.table([]string{"MaxIdle", "CacheSize", "hit ratio", "DB reads/s", "DB writes/s", "entries mean / max", "cache memory", "scavenged", "start lag p99 / max (simulated)"}, rows)
		m.chart(charts, "tuning-"+sweep, "tuning, "+sweep)
	}
	m.p("Start lag is how late, in simulated time, requests began against their schedule: keep it small next to the smallest MaxIdle, or lower -sim-speedup.")
}
