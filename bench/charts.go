package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// charts draws the report's SVG charts into dir and returns their file
// names by key.
func (r *report) charts(dir string) (map[string]string, error) {
	// Liberation Sans has Arial's metrics, so the text fits where a viewer
	// substitutes a common sans-serif font.
	plot.DefaultFont = font.Font{Typeface: "Liberation", Variant: "Sans"}
	plotter.DefaultFont = plot.DefaultFont
	out := map[string]string{}
	save := func(key, file string, w, h vg.Length, rows [][]*plot.Plot) error {
		c := vgsvg.New(w, h)
		dc := draw.New(c)
		tiles := draw.Tiles{Rows: len(rows), Cols: len(rows[0]), PadX: vg.Millimeter * 8, PadY: vg.Millimeter * 6,
			PadTop: vg.Millimeter * 3, PadBottom: vg.Millimeter * 3, PadLeft: vg.Millimeter * 6, PadRight: vg.Millimeter * 6}
		canvases := plot.Align(rows, tiles, dc)
		for i := range rows {
			for j, p := range rows[i] {
				if p != nil {
					p.Draw(canvases[i][j])
				}
			}
		}
		f, err := os.Create(filepath.Join(dir, file))
		if err != nil {
			return err
		}
		if _, err := c.WriteTo(f); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		out[key] = file
		return nil
	}
	one := func(p *plot.Plot) [][]*plot.Plot { return [][]*plot.Plot{{p}} }

	if c := r.Compare; c != nil {
		for _, pl := range c.Payloads {
			p, err := compareChart(c, pl.Name)
			if err != nil {
				return nil, err
			}
			h := vg.Length(len(c.Stores))*vg.Centimeter*1.6 + 3*vg.Centimeter
			if err := save("compare-"+pl.Name, "compare-"+pl.Name+".svg", 18*vg.Centimeter, h, one(p)); err != nil {
				return nil, err
			}
		}
	}
	if inv := r.Invalidation; inv != nil && len(inv.evictedSamples) > 0 {
		p, err := cdfChart("Invalidation latency from A's Save called", map[string][]time.Duration{
			"evicted on B (upper bound: poll period)": inv.evictedSamples,
			"arrived at a plain LISTEN connection":    inv.deliveredSamples,
		})
		if err != nil {
			return nil, err
		}
		if err := save("invalidation", "invalidation.svg", 16*vg.Centimeter, 10*vg.Centimeter, one(p)); err != nil {
			return nil, err
		}
	}
	if t := r.Throughput; t != nil {
		p, err := throughputChart(t)
		if err != nil {
			return nil, err
		}
		if err := save("throughput", "throughput.svg", 16*vg.Centimeter, 11*vg.Centimeter, one(p)); err != nil {
			return nil, err
		}
	}
	if l := r.Envelope; l != nil && len(l.Points) > 0 {
		a, b, err := envelopeCharts(l)
		if err != nil {
			return nil, err
		}
		if err := save("envelope", "envelope.svg", 24*vg.Centimeter, 10*vg.Centimeter, [][]*plot.Plot{{a, b}}); err != nil {
			return nil, err
		}
	}
	if t := r.Tuning; t != nil {
		for _, sweep := range []string{"MaxIdle", "CacheSize"} {
			rows, err := tuningCharts(t, sweep)
			if err != nil {
				return nil, err
			}
			if rows == nil {
				continue
			}
			if err := save("tuning-"+sweep, "tuning-"+sweep+".svg", 16*vg.Centimeter, 24*vg.Centimeter, rows); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// log10Ticks labels an axis whose values are log10 of nanoseconds.
type log10Ticks struct{}

func (log10Ticks) Ticks(lo, hi float64) []plot.Tick {
	labels := []string{"1 ns", "10 ns", "100 ns", "1 µs", "10 µs", "100 µs", "1 ms", "10 ms", "100 ms", "1 s"}
	var ts []plot.Tick
	for e := math.Floor(lo); e <= math.Ceil(hi); e++ {
		if e >= lo && e <= hi {
			label := ""
			if i := int(e); i >= 0 && i < len(labels) {
				label = labels[i]
			}
			ts = append(ts, plot.Tick{Value: e, Label: label})
		}
		for k := 2; k < 10; k++ {
			if v := e + math.Log10(float64(k)); v >= lo && v <= hi {
				ts = append(ts, plot.Tick{Value: v})
			}
		}
	}
	return ts
}

// compareChart is a horizontal bar chart of ns/op, on a log scale, one bar
// per operation for every store.
func compareChart(c *compareResult, payload string) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Store comparison, payload %s: median time per operation (log scale)", payload)
	p.X.Label.Text = "time per operation"
	p.X.Tick.Marker = log10Ticks{}
	var names []string
	for i := len(c.Stores) - 1; i >= 0; i-- { // first store at the top
		names = append(names, c.Stores[i].Name)
	}
	w := vg.Points(7)
	top := 0.0
	for i, op := range c.Ops {
		vals := make(plotter.Values, len(names))
		for j, s := range names {
			v := c.med(s, payload, op)
			if math.IsNaN(v) || v <= 0 {
				vals[j] = 0
				continue
			}
			vals[j] = math.Log10(v)
			top = math.Max(top, vals[j])
		}
		b, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return nil, err
		}
		b.Horizontal = true
		b.Color = plotutil.Color(i)
		b.LineStyle.Width = 0
		b.Offset = -w * vg.Length(float64(i)-float64(len(c.Ops)-1)/2)
		p.Add(b)
		p.Legend.Add(op, b)
	}
	p.NominalY(names...)
	// From 100 ns to a decade past the slowest: room for the legend.
	p.X.Min, p.X.Max = 2, math.Ceil(top)+1
	p.Legend.Top = true
	p.Legend.Left = false
	p.Legend.XOffs = -vg.Millimeter * 3
	p.Add(plotter.NewGrid())
	return p, nil
}

// cdfChart is the cumulative distribution of each series, on a log time
// axis.
func cdfChart(title string, series map[string][]time.Duration) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "µs (log scale)"
	p.Y.Label.Text = "fraction of samples"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = onetwofive{}
	p.Y.Min, p.Y.Max = 0, 1
	names := make([]string, 0, len(series))
	for name := range series {
		names = append(names, name)
	}
	slices.Sort(names)
	for i, name := range names {
		s := slices.Clone(series[name])
		if len(s) == 0 {
			continue
		}
		slices.Sort(s)
		pts := make(plotter.XYs, len(s))
		for j, d := range s {
			pts[j].X = math.Max(float64(d)/float64(time.Microsecond), 1)
			pts[j].Y = float64(j+1) / float64(len(s))
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return nil, err
		}
		l.Color = plotutil.Color(i)
		l.Dashes = plotutil.Dashes(i)
		p.Add(l)
		p.Legend.Add(name, l)
	}
	p.Legend.XOffs, p.Legend.YOffs = -vg.Millimeter*3, vg.Millimeter*3
	p.Add(plotter.NewGrid())
	return p, nil
}

// onetwofive labels a log axis at 1, 2 and 5 times each power of ten.
type onetwofive struct{}

func (onetwofive) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		for k := 1; k < 10; k++ {
			v := float64(k) * math.Pow(10, e)
			if v < lo || v > hi {
				continue
			}
			t := plot.Tick{Value: v}
			if k == 1 || k == 2 || k == 5 {
				t.Label = fmt.Sprint(v)
			}
			ts = append(ts, t)
		}
	}
	return ts
}

func throughputChart(t *throughputResult) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Write throughput (median saves/s)"
	p.X.Label.Text = "concurrent writers (log scale)"
	p.Y.Label.Text = "saves per second"
	var all plotter.XYs
	for _, n := range t.Writers {
		all = append(all, plotter.XY{X: float64(n)})
	}
	logAxis(&p.X, all, writersTicks(t.Writers))
	for i, mode := range t.Modes {
		var pts plotter.XYs
		for _, n := range t.Writers {
			if c := t.cell(mode, n); c != nil {
				pts = append(pts, plotter.XY{X: float64(n), Y: c.median()})
			}
		}
		if err := addLine(p, mode, pts, i); err != nil {
			return nil, err
		}
	}
	p.Y.Min = 0
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.XOffs = vg.Millimeter * 3
	p.Add(plotter.NewGrid())
	return p, nil
}

// logAxis puts ax on a log scale with room around the points' xs, also
// when there is only one.
func logAxis(ax *plot.Axis, pts plotter.XYs, ticks plot.Ticker) {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, p := range pts {
		lo, hi = math.Min(lo, p.X), math.Max(hi, p.X)
	}
	ax.Scale = plot.LogScale{}
	ax.Tick.Marker = ticks
	if lo > 0 && !math.IsInf(hi, 0) {
		ax.Min, ax.Max = lo/1.3, hi*1.3
	}
}

// writersTicks labels exactly the counts measured.
func writersTicks(ns []int) plot.ConstantTicks {
	var ts plot.ConstantTicks
	for _, n := range ns {
		ts = append(ts, plot.Tick{Value: float64(n), Label: fmt.Sprint(n)})
	}
	return ts
}

func addLine(p *plot.Plot, name string, pts plotter.XYs, i int) error {
	if len(pts) == 0 {
		return nil
	}
	l, s, err := plotter.NewLinePoints(pts)
	if err != nil {
		return err
	}
	l.Color = plotutil.Color(i)
	l.Dashes = plotutil.Dashes(i)
	s.Color = plotutil.Color(i)
	s.Shape = plotutil.Shape(i)
	p.Add(l, s)
	p.Legend.Add(name, l, s)
	return nil
}

func envelopeCharts(l *envelopeResult) (*plot.Plot, *plot.Plot, error) {
	var ns []int
	for _, p := range l.Points {
		if !slices.Contains(ns, p.listeners()) {
			ns = append(ns, p.listeners())
		}
	}
	a := plot.New()
	a.Title.Text = fmt.Sprintf("Write throughput vs listening instances (%d writers)", l.Writers)
	a.X.Label.Text = "listeners"
	a.Y.Label.Text = "saves per second"
	b := plot.New()
	b.Title.Text = "Invalidation p99 to one listener (from Save's return)"
	b.X.Label.Text = "listeners"
	b.Y.Label.Text = "ms"
	for i, mode := range l.Modes {
		var tp, p99 plotter.XYs
		what := ""
		for _, p := range l.Points {
			if p.Mode != mode {
				continue
			}
			x := float64(p.listeners())
			tp = append(tp, plotter.XY{X: x, Y: p.median()})
			p99 = append(p99, plotter.XY{X: x, Y: float64(p.Latency.FromReturn.P99) / 1e6})
			what = p.Notified
		}
		if err := addLine(a, mode, tp, i); err != nil {
			return nil, nil, err
		}
		if err := addLine(b, mode+" ("+what+")", p99, i); err != nil {
			return nil, nil, err
		}
	}
	for _, p := range []*plot.Plot{a, b} {
		p.X.Tick.Marker = writersTicks(ns)
		p.X.Min, p.Y.Min = 0, 0
		p.Legend.Left = true
		p.Legend.XOffs = vg.Millimeter * 3
		p.Add(plotter.NewGrid())
	}
	// Throughput starts high for both modes, and one falls to the right:
	// the legend goes bottom left; latency's top left.
	b.Legend.Top = true
	return a, b, nil
}

// tuningCharts are three panels over one sweep: hit ratio, database reads
// per second, cache memory.
func tuningCharts(t *tuningResult, sweep string) ([][]*plot.Plot, error) {
	var hit, reads, mem plotter.XYs
	var ticks plot.ConstantTicks
	for _, p := range t.Points {
		if !p.in(sweep) {
			continue
		}
		x := p.MaxIdle.Minutes()
		label := p.MaxIdle.String()
		if sweep == "CacheSize" {
			x, label = float64(p.CacheSize), fmt.Sprint(p.CacheSize)
		}
		ticks = append(ticks, plot.Tick{Value: x, Label: label})
		hit = append(hit, plotter.XY{X: x, Y: 100 * p.HitRatio})
		reads = append(reads, plotter.XY{X: x, Y: p.DBReadsPerSec})
		mem = append(mem, plotter.XY{X: x, Y: p.CacheBytes / (1 << 20)})
	}
	if len(hit) == 0 {
		return nil, nil
	}
	for _, s := range []plotter.XYs{hit, reads, mem} {
		slices.SortFunc(s, func(a, b plotter.XY) int { return int(math.Copysign(1, a.X-b.X)) })
	}
	xlabel := "MaxIdle (log scale)"
	held := fmt.Sprintf("CacheSize %d", t.Points[0].CacheSize)
	for _, p := range t.Points {
		if p.in(sweep) {
			if sweep == "CacheSize" {
				xlabel, held = "CacheSize (log scale)", "MaxIdle "+p.MaxIdle.String()
			} else {
				held = fmt.Sprintf("CacheSize %d", p.CacheSize)
			}
			break
		}
	}
	panel := func(title, ylabel string, pts plotter.XYs, i int) (*plot.Plot, error) {
		p := plot.New()
		p.Title.Text = title
		p.X.Label.Text = xlabel
		p.Y.Label.Text = ylabel
		logAxis(&p.X, pts, ticks)
		p.Y.Min = 0
		if err := addLine(p, ylabel, pts, i); err != nil {
			return nil, err
		}
		p.Legend = plot.NewLegend() // one series: no legend
		p.Add(plotter.NewGrid())
		return p, nil
	}
	a, err := panel(fmt.Sprintf("Cache hit ratio vs %s (%s)", sweep, held), "hit ratio %", hit, 0)
	if err != nil {
		return nil, err
	}
	a.Y.Max = 100
	b, err := panel(fmt.Sprintf("Database reads vs %s", sweep), "reads per simulated second", reads, 1)
	if err != nil {
		return nil, err
	}
	c, err := panel(fmt.Sprintf("Cache memory vs %s", sweep), "MiB (mean)", mem, 2)
	if err != nil {
		return nil, err
	}
	return [][]*plot.Plot{{a}, {b}, {c}}, nil
}
