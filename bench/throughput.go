package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/pgsession/pgsession"
)

// Write throughput: saves per second with N concurrent writers, each
// saving its own session over and over, for four ways of writing the same
// row:
//
//   - upsert: the comparison's floor, a plain upsert of the row (new data,
//     a new expiry) without pg_notify, straight through pgx: no
//     invalidation;
//   - upsert+notify: the same statement with pg_notify, as pgsession sends
//     it for one write: invalidation, no batching;
//   - pgsession MaxBatch 1: Store.Save with batching off;
//   - pgsession batched: Store.Save with the default MaxBatch.
//
// All four write to one table on one pool; another instance LISTENs on the
// table's channel all the while, so every notification is delivered as in
// production. The writing Store of a pgsession mode is opened for that
// mode's cells only (it listens too, as every instance does), so that the
// other mode's Store does not add a third listener.

const (
	modeUpsert    = "upsert"
	modeNotify    = "upsert+notify"
	modeUnbatched = "pgsession MaxBatch 1"
	modeBatched   = "pgsession batched"
)

var throughputModes = []string{modeUpsert, modeNotify, modeUnbatched, modeBatched}

// throughputPoolConns is the writers' pool: room for 32 writers at once.
const throughputPoolConns = 32

type throughputOptions struct {
	writers  []int
	duration time.Duration
	repeats  int
}

type throughputCell struct {
	Mode    string
	Writers int
	PerSec  []float64  // saves per second, one per round
	Latency dist       // of every save of every round
	CPU     []cpuPerOp // CPU per save, this process and the server, one per round
	lat     latencies
}

func (c *throughputCell) median() float64 { return median(c.PerSec) }

type throughputResult struct {
	Modes     []string
	Writers   []int
	Cells     []*throughputCell
	PoolConns int
	Duration  time.Duration
	Repeats   int
}

func (r *throughputResult) cell(mode string, writers int) *throughputCell {
	if r == nil {
		return nil
	}
	for _, c := range r.Cells {
		if c.Mode == mode && c.Writers == writers {
			return c
		}
	}
	return nil
}

// rawWriter writes one row of its own, its data changed every time.
type rawWriter struct {
	r    *rawStore
	key  []byte
	data []byte
	n    uint64
}

func newRawWriter(r *rawStore, p payload) (*rawWriter, error) {
	tok := make([]byte, 32)
	_, _ = rand.Read(tok)
	k := sha256.Sum256(tok)
	data, err := pgsession.DefaultSerializer{}.Serialize(p.values())
	if err != nil {
		return nil, err
	}
	return &rawWriter{r: r, key: k[:], data: data}, nil
}

func (w *rawWriter) change(ctx context.Context) error {
	w.n++
	binary.LittleEndian.PutUint64(w.data[len(w.data)-8:], w.n)
	return w.r.write(ctx, w.key, w.data)
}

func runThroughput(ctx context.Context, e *env, o throughputOptions, pr progress) (_ *throughputResult, err error) {
	res := &throughputResult{Modes: throughputModes, Writers: o.writers, PoolConns: throughputPoolConns, Duration: o.duration, Repeats: o.repeats}
	pool, err := e.newPool(ctx, throughputPoolConns, nil)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	listenPool, err := e.newPool(ctx, 2, nil)
	if err != nil {
		return nil, err
	}
	defer listenPool.Close()

	table := uniqueName("throughput")
	channel := "pgsbench:" + table
	// The other instance: it LISTENs and applies what arrives.
	other, _, err := newPgsession(ctx, e, listenPool, pgsession.Config{Table: table, Channel: channel, PurgeInterval: -1})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, e.dropTable(table)) }()
	defer other.Close()
	// The sessions of the pgsession modes are made by a Store with no cache
	// (and so no listener); each cell saves them through its mode's Store.
	setup, _, err := newPgsession(ctx, e, pool, pgsession.Config{Table: table, Channel: channel, PurgeInterval: -1, CacheSize: -1})
	if err != nil {
		return nil, err
	}
	defer setup.Close()
	if err := warm(ctx, pool, throughputPoolConns); err != nil {
		return nil, err
	}

	most := 0
	for _, n := range o.writers {
		most = max(most, n)
	}
	raw := map[string][]*rawWriter{}
	var sessions []*writerSession
	for range most {
		for _, mode := range []string{modeUpsert, modeNotify} {
			w, err := newRawWriter(newRawStore(pool, table, channel, mode == modeNotify), payloadSmall)
			if err != nil {
				return nil, err
			}
			raw[mode] = append(raw[mode], w)
		}
		w, err := newWriterSession(ctx, setup, payloadSmall)
		if err != nil {
			return nil, err
		}
		sessions = append(sessions, w)
	}

	// cell measures one mode with n writers for o.duration.
	cell := func(mode string, n int, d time.Duration) (timing, [][]time.Duration, cpuPerOp, error) {
		var fns []func(context.Context) error
		switch mode {
		case modeUpsert, modeNotify:
			for _, w := range raw[mode][:n] {
				fns = append(fns, w.change)
			}
		default:
			cfg := pgsession.Config{Table: table, Channel: channel, PurgeInterval: -1, SkipCreateTable: true}
			if mode == modeUnbatched {
				cfg.MaxBatch = 1
			}
			s, _, err := newPgsession(ctx, e, pool, cfg)
			if err != nil {
				return timing{}, nil, cpuPerOp{}, err
			}
			defer s.Close()
			for _, w := range sessions[:n] {
				w.store = s
				fns = append(fns, w.change)
			}
		}
		perWorker := make([][]time.Duration, n)
		cpu0 := takeCPU()
		t, err := timeParallel(d, n, func(i int) error {
			start := time.Now()
			if err := fns[i](ctx); err != nil {
				return err
			}
			perWorker[i] = append(perWorker[i], time.Since(start))
			return nil
		})
		return t, perWorker, cpu0.perOp(takeCPU(), t.ops), err
	}

	// Warm every path (statements prepared on the connections, plans).
	for _, mode := range throughputModes {
		if _, _, _, err := cell(mode, min(most, throughputPoolConns), max(o.duration/2, 100*time.Millisecond)); err != nil {
			return nil, fmt.Errorf("%s: warm-up: %w", mode, err)
		}
	}

	for round := range o.repeats {
		for _, n := range o.writers {
			pr.printf("throughput: round %d/%d, %d writers", round+1, o.repeats, n)
			for _, mode := range throughputModes {
				c := res.cell(mode, n)
				if c == nil {
					c = &throughputCell{Mode: mode, Writers: n}
					res.Cells = append(res.Cells, c)
				}
				t, perWorker, cpu, err := cell(mode, n, o.duration)
				if err != nil {
					return nil, fmt.Errorf("%s, %d writers: %w", mode, n, err)
				}
				c.PerSec = append(c.PerSec, t.perSecond())
				c.CPU = append(c.CPU, cpu)
				for _, l := range perWorker {
					c.lat.addAll(l)
				}
			}
		}
	}
	for _, c := range res.Cells {
		c.Latency = c.lat.dist()
	}
	if st := other.Stats(); st.Notifications == 0 {
		return nil, errors.New("the listening instance received no notification")
	}
	return res, nil
}
