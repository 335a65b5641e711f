package main

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/pgsession/pgsession"
)

// Read cost while invalidations stream in. A reader Store serves cache-hit
// Gets of a few hot sessions from one goroutine, in three conditions:
//
//   - idle: nothing else runs;
//   - writer, other table: another Store saves at the given rate on a table
//     of its own, so the machine and the server are as busy as below, but
//     the reader receives no notification;
//   - invalidations: another Store saves at the given rate sessions of the
//     reader's table that the reader has cached, so the reader's listener
//     applies a stream of notifications (and evictions) while it reads.
//
// The conditions alternate round by round; the report gives the median
// ns/op of each and the ratios: invalidations / other table isolates the
// cost of applying invalidations from that of a busy machine.

const (
	condIdle   = "idle"
	condOther  = "writer, other table"
	condStream = "invalidations"
)

var readCostConds = []string{condIdle, condOther, condStream}

type readCostOptions struct {
	rate     float64 // background saves per second
	duration time.Duration
	repeats  int
}

type readCostCell struct {
	Cond         string
	NsPerOp      []float64
	WritesPerSec []float64 // achieved background rate
	NotifyPerSec []float64 // notifications the reader received per second
	EvictsPerSec []float64 // entries they evicted per second
	Misses       int64     // reader Gets that were not cache hits: should be 0
	SkippedTicks int64     // background ticks that found every writer busy
}

func (c *readCostCell) median() float64 { return median(c.NsPerOp) }

type readCostResult struct {
	Rate     float64
	Cells    []*readCostCell
	Duration time.Duration
	Repeats  int
}

func (r *readCostResult) cell(cond string) *readCostCell {
	if r == nil {
		return nil
	}
	for _, c := range r.Cells {
		if c.Cond == cond {
			return c
		}
	}
	return nil
}

// backgroundWorkers is how many goroutines carry the background writes.
const backgroundWorkers = 8

func runReadCost(ctx context.Context, e *env, o readCostOptions, pr progress) (_ *readCostResult, err error) {
	res := &readCostResult{Rate: o.rate, Duration: o.duration, Repeats: o.repeats}
	for _, c := range readCostConds {
		res.Cells = append(res.Cells, &readCostCell{Cond: c})
	}
	readerPool, err := e.newPool(ctx, 4, nil)
	if err != nil {
		return nil, err
	}
	defer readerPool.Close()
	writerPool, err := e.newPool(ctx, 4, nil)
	if err != nil {
		return nil, err
	}
	defer writerPool.Close()
	otherPool, err := e.newPool(ctx, 4, nil)
	if err != nil {
		return nil, err
	}
	defer otherPool.Close()

	reader, table, err := newPgsession(ctx, e, readerPool, pgsession.Config{PurgeInterval: -1})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, e.dropTable(table)) }()
	defer reader.Close()
	writer, _, err := newPgsession(ctx, e, writerPool, pgsession.Config{Table: table, PurgeInterval: -1})
	if err != nil {
		return nil, err
	}
	defer writer.Close()
	other, otherTable, err := newPgsession(ctx, e, otherPool, pgsession.Config{PurgeInterval: -1})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, e.dropTable(otherTable)) }()
	defer other.Close()

	// The reader's hot sessions.
	rf := &fixture{kind: "pgsession-cache", p: payloadSmall, store: reader, pg: reader}
	var hot []*client
	for range 16 {
		c, err := rf.newClient(ctx)
		if err != nil {
			return nil, err
		}
		hot = append(hot, c)
	}
	// The background sessions: written by the writer, cached by the reader,
	// enough that every background write evicts an entry.
	n := int(o.rate*o.duration.Seconds()*float64(o.repeats)*1.2) + 10*backgroundWorkers
	pr.printf("read cost: %d background sessions per writer", n)
	stream, err := newBackground(ctx, writer, reader, n)
	if err != nil {
		return nil, err
	}
	otherBG, err := newBackground(ctx, other, nil, n)
	if err != nil {
		return nil, err
	}

	var i int
	get := func() error {
		i++
		return hot[i%len(hot)].get()
	}
	for range 1000 { // warm
		if err := get(); err != nil {
			return nil, err
		}
	}

	for round := range o.repeats {
		pr.printf("read cost: round %d/%d", round+1, o.repeats)
		for _, cond := range readCostConds {
			c := res.cell(cond)
			var bg *background
			switch cond {
			case condOther:
				bg = otherBG
			case condStream:
				bg = stream
			}
			if err := measureRead(ctx, reader, c, bg, o, get); err != nil {
				return nil, fmt.Errorf("read cost, %s: %w", cond, err)
			}
		}
	}
	return res, nil
}

// measureRead runs get for o.duration while bg (if any) is written at
// o.rate, and adds the outcome to c.
func measureRead(ctx context.Context, reader *pgsession.Store, c *readCostCell, bg *background, o readCostOptions, get func() error) error {
	var writes atomic.Int64
	var stop func() (int64, error)
	if bg != nil {
		bctx, cancel := context.WithCancel(ctx)
		var skipped int64
		var perr error
		ended := make(chan struct{})
		go func() {
			defer close(ended)
			_, skipped, perr = pace(bctx, o.rate, backgroundWorkers, func(w int) error {
				if err := bg.write(bctx, w); err != nil {
					if bctx.Err() != nil {
						return nil
					}
					return err
				}
				writes.Add(1)
				return nil
			})
		}()
		stop = func() (int64, error) { cancel(); <-ended; return skipped, perr }
		// Measure only once the stream flows.
		for writes.Load() < 5 {
			select {
			case <-ended:
				_, err := stop()
				return fmt.Errorf("the background writer stopped: %w", err)
			case <-ctx.Done():
				_, _ = stop()
				return ctx.Err()
			case <-time.After(time.Millisecond):
			}
		}
	}
	before := reader.Stats()
	w0 := writes.Load()
	t, err := timeSerial(o.duration, get)
	w1 := writes.Load()
	after := reader.Stats()
	if stop != nil {
		skipped, perr := stop()
		c.SkippedTicks += skipped
		if perr != nil {
			return perr
		}
	}
	if err != nil {
		return err
	}
	secs := t.wall.Seconds()
	c.NsPerOp = append(c.NsPerOp, t.nsPerOp())
	c.WritesPerSec = append(c.WritesPerSec, float64(w1-w0)/secs)
	c.NotifyPerSec = append(c.NotifyPerSec, float64(after.Notifications-before.Notifications)/secs)
	c.EvictsPerSec = append(c.EvictsPerSec, float64(after.NotifyEvictions-before.NotifyEvictions)/secs)
	c.Misses += after.CacheMisses - before.CacheMisses
	return nil
}

// background is the sessions a background writer cycles through.
type background struct {
	ws   []*writerSession
	next [backgroundWorkers]int // per worker: how far it got
}

// newBackground saves n sessions through s and, unless cacheIn is nil,
// caches each in cacheIn.
func newBackground(ctx context.Context, s, cacheIn *pgsession.Store, n int) (*background, error) {
	b := &background{ws: make([]*writerSession, n)}
	err := forEach(n, 16, func(i int) error {
		w, err := newWriterSession(ctx, s, payloadSmall)
		if err == nil && cacheIn != nil {
			err = w.readWith(ctx, cacheIn)
		}
		b.ws[i] = w
		return err
	})
	return b, err
}

// write changes the next session of worker w: worker w cycles through its
// own share of the sessions, so no session is written by two goroutines at
// once, and each write reaches a session not written before (while any
// is left).
func (b *background) write(ctx context.Context, w int) error {
	s := b.ws[(b.next[w]*backgroundWorkers+w)%len(b.ws)]
	b.next[w]++
	return s.change(ctx)
}
