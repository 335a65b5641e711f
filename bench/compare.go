package main

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"time"
)

// The store comparison: every store kind, every operation, every payload,
// measured in rounds so that the repeats of one cell are spread over the
// run rather than taken back to back, and summarized by their median.
// Around each Save changed cell of a store that keeps its sessions in
// PostgreSQL, the table's update counters are read, settled (see hot.go):
// how many rows each Save updated (and inserted: none, every Save changes
// an existing session), and the share of HOT updates.

type compareOptions struct {
	duration time.Duration // measuring time of one cell in one round
	repeats  int           // rounds
	kinds    []storeKind
	payloads []payload
}

type compareCell struct {
	Store, Payload, Op string
	NsPerOp            []float64 // wall ns per op, one per round
	CPUNsPerOp         []float64 // CPU ns of the whole process per op, one per round
	Ops                int64     // operations over all rounds
	// HOT is the table's updates during this cell, over all rounds: for
	// Save changed of a store that keeps its sessions in PostgreSQL.
	HOT *hotStats `json:",omitempty"`
	// Allocs is the heap allocations of one op, for Get (serial), after
	// the rounds: see measureAllocs.
	Allocs *allocStats `json:",omitempty"`
}

// allocStats is what one operation allocates: runtime.MemStats' Mallocs
// and TotalAlloc around a loop of Ops operations, divided by Ops. They
// count every goroutine of the process, so for a store that waits for a
// server they include the client library's work (pgx, redigo) as well.
type allocStats struct {
	Ops         int64
	AllocsPerOp float64
	BytesPerOp  float64
}

// allocsOp is the operation whose allocations the comparison counts.
const allocsOp = "Get"

// measureAllocs runs do for about d (at least 100 times) between two
// reads of the process's allocation counters.
func measureAllocs(d time.Duration, do func() error) (*allocStats, error) {
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	start := time.Now()
	var n int64
	for n < 100 || time.Since(start) < d {
		for range checkEvery {
			if err := do(); err != nil {
				return nil, err
			}
			n++
		}
	}
	runtime.ReadMemStats(&m1)
	return &allocStats{Ops: n, AllocsPerOp: float64(m1.Mallocs-m0.Mallocs) / float64(n), BytesPerOp: float64(m1.TotalAlloc-m0.TotalAlloc) / float64(n)}, nil
}

// hotOp is the operation whose updates the comparison counts.
const hotOp = "Save changed"

func (c *compareCell) median() float64    { return median(c.NsPerOp) }
func (c *compareCell) cpuMedian() float64 { return median(c.CPUNsPerOp) }

type payloadInfo struct {
	Name  string
	Bytes int // as pgsession encodes it
}

type storeInfo struct{ Name, About string }

type compareResult struct {
	Payloads []payloadInfo
	Stores   []storeInfo
	Ops      []string
	Cells    []*compareCell
	Duration time.Duration
	Repeats  int
	// Paired holds, per payload, the ratios of pgsession's Save changed
	// to the floor's (raw-pgx-notify), each from one pair of back-to-back
	// slices (see pairSaveChanged).
	Paired map[string][]float64 `json:",omitempty"`
}

// pairSlices is how many alternating slices of each store a round of the
// paired Save changed holds: each slice lasts the cell's duration over it.
const pairSlices = 5

// pairSaveChanged times Save changed of a (pgsession) and of b (the floor)
// in n pairs of slices of d each, back to back, a first in every other
// pair, and returns each pair's ratio a/b. The cells of a round run a
// store's four operations between the two stores' Save changed, a second
// or more apart; on a shared machine the load changes within that, and a
// ratio of the two cells' medians can move by a fifth from run to run. A
// pair's two slices see the same load, so the median of the pairs' ratios
// is the steadier number.
func pairSaveChanged(n int, d time.Duration, a, b func() error) ([]float64, error) {
	ratios := make([]float64, 0, n)
	for i := range n {
		var ta, tb timing
		var err error
		if i%2 == 0 {
			if ta, err = timeSerial(d, a); err == nil {
				tb, err = timeSerial(d, b)
			}
		} else {
			if tb, err = timeSerial(d, b); err == nil {
				ta, err = timeSerial(d, a)
			}
		}
		if err != nil {
			return nil, err
		}
		ratios = append(ratios, ta.nsPerOp()/tb.nsPerOp())
	}
	return ratios, nil
}

// cell returns the cell of store, payload and op, or nil.
func (r *compareResult) cell(store, payload, op string) *compareCell {
	if r == nil {
		return nil
	}
	for _, c := range r.Cells {
		if c.Store == store && c.Payload == payload && c.Op == op {
			return c
		}
	}
	return nil
}

// med returns the median ns/op of a cell, or NaN.
func (r *compareResult) med(store, payload, op string) float64 {
	if c := r.cell(store, payload, op); c != nil {
		return c.median()
	}
	return math.NaN()
}

// pairs returns the paired Save changed ratios of payload, or nil.
func (r *compareResult) pairs(payload string) []float64 {
	if r == nil {
		return nil
	}
	return r.Paired[payload]
}

// compareRow is one store of one payload: its fixture and clients.
type compareRow struct {
	kind     storeKind
	f        *fixture
	serial   *client
	parallel []*client
}

func runCompare(ctx context.Context, e *env, o compareOptions, pr progress) (*compareResult, error) {
	res := &compareResult{Duration: o.duration, Repeats: o.repeats}
	for _, k := range o.kinds {
		res.Stores = append(res.Stores, storeInfo{k.name, k.about})
	}
	for _, op := range ops {
		res.Ops = append(res.Ops, op.name)
	}
	for _, p := range o.payloads {
		res.Payloads = append(res.Payloads, payloadInfo{p.name, p.encodedSize()})
		if err := comparePayload(ctx, e, o, p, res, pr); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func comparePayload(ctx context.Context, e *env, o compareOptions, p payload, res *compareResult, pr progress) (err error) {
	var rows []*compareRow
	defer func() {
		for _, r := range rows {
			if cerr := r.f.close(); cerr != nil && err == nil {
				err = fmt.Errorf("%s: close: %w", r.kind.name, cerr)
			}
		}
	}()
	for _, k := range o.kinds {
		f, err := k.open(ctx, e, p)
		if err != nil {
			return fmt.Errorf("%s: open: %w", k.name, err)
		}
		r := &compareRow{kind: k, f: f}
		rows = append(rows, r)
		if r.serial, err = f.newClient(ctx); err != nil {
			return fmt.Errorf("%s: %w", k.name, err)
		}
		for range parallelClients {
			c, err := f.newClient(ctx)
			if err != nil {
				return fmt.Errorf("%s: %w", k.name, err)
			}
			r.parallel = append(r.parallel, c)
		}
		// Warm every path: connections, prepared statements, caches.
		for _, op := range ops {
			if op.gets && k.saves {
				continue
			}
			for range 20 {
				if err := op.do(r.serial); err != nil {
					return fmt.Errorf("%s %s: %w", k.name, op.name, err)
				}
			}
		}
		for _, c := range r.parallel {
			if !k.saves {
				if err := c.get(); err != nil {
					return fmt.Errorf("%s: %w", k.name, err)
				}
			}
		}
	}
	for round := range o.repeats {
		pr.printf("compare %s: round %d/%d", p.name, round+1, o.repeats)
		for _, r := range rows {
			for _, op := range ops {
				if op.gets && r.kind.saves {
					continue
				}
				if err := ctx.Err(); err != nil {
					return err
				}
				// The table's update counters around Save changed: the
				// share of its updates that were HOT.
				hot := op.name == hotOp && r.f.table != ""
				var before tableStats
				var t timing
				var err error
				if hot {
					if before, err = e.settledStats(ctx, r.f.table, r.f.writes...); err != nil {
						return fmt.Errorf("%s %s: %w", r.kind.name, p.name, err)
					}
				}
				if op.parallel {
					t, err = timeParallel(o.duration, len(r.parallel), func(i int) error { return op.do(r.parallel[i]) })
				} else {
					t, err = timeSerial(o.duration, func() error { return op.do(r.serial) })
				}
				if err != nil {
					return fmt.Errorf("%s %s %s: %w", r.kind.name, p.name, op.name, err)
				}
				c := res.cell(r.kind.name, p.name, op.name)
				if c == nil {
					c = &compareCell{Store: r.kind.name, Payload: p.name, Op: op.name}
					res.Cells = append(res.Cells, c)
				}
				c.NsPerOp = append(c.NsPerOp, t.nsPerOp())
				if t.cpu > 0 {
					c.CPUNsPerOp = append(c.CPUNsPerOp, t.cpuNsPerOp())
				}
				c.Ops += t.ops
				if hot {
					after, err := e.settledStats(ctx, r.f.table, r.f.writes...)
					if err != nil {
						return fmt.Errorf("%s %s: %w", r.kind.name, p.name, err)
					}
					if c.HOT == nil {
						c.HOT = &hotStats{}
					}
					c.HOT.add(before, after, t.ops)
				}
			}
		}
	}
	// Save changed against the floor, in alternating slices.
	var ours, floor *compareRow
	for _, r := range rows {
		switch r.kind.name {
		case "pgsession-cache":
			ours = r
		case "raw-pgx-notify":
			floor = r
		}
	}
	if ours != nil && floor != nil {
		pr.printf("compare %s: Save changed and the floor's, alternating", p.name)
		q, err := pairSaveChanged(o.repeats*pairSlices, o.duration/pairSlices, ours.serial.saveChanged, floor.serial.saveChanged)
		if err != nil {
			return fmt.Errorf("paired Save changed %s: %w", p.name, err)
		}
		if res.Paired == nil {
			res.Paired = map[string][]float64{}
		}
		res.Paired[p.name] = q
	}
	// Allocations of one Get, once every round is done, each store alone.
	for _, r := range rows {
		if r.kind.saves {
			continue
		}
		a, err := measureAllocs(o.duration, r.serial.get)
		if err != nil {
			return fmt.Errorf("%s %s %s allocations: %w", r.kind.name, p.name, allocsOp, err)
		}
		if c := res.cell(r.kind.name, p.name, allocsOp); c != nil {
			c.Allocs = a
		}
	}
	return nil
}
