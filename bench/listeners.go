package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgsession/pgsession"
)

// Scaling with the number of listening instances. One writing Store (cache
// off, so it has no listener of its own; its writes notify all the same)
// saves with a few concurrent writers, while N other Stores in this
// process, each with its own listening connection, LISTEN on the same
// table. N grows from the smallest count to the largest, the Stores of the
// smaller counts staying open. At each N: the write throughput, and the
// invalidation latency from the writer to one of the listeners (measured
// as in the invalidation scenario, with no other writes going on).
//
// Connections: each listener holds one connection of its own (hijacked
// from a shared pool of MaxConns 1, which New also uses for its checks);
// the writer has a pool of MaxConns 2. A count the server cannot take
// (max_connections minus the connections open at the start, less a margin
// of 5 for the writer and the suite) is lowered to what it can, and the
// report says so.

// listenerMargin is how many connections the scenario leaves free besides
// the listeners: the writer's pool (2), the listeners' pool (1) and 2 to
// spare.
const listenerMargin = 5

type listenersOptions struct {
	counts   []int
	writers  int
	duration time.Duration
	repeats  int
	samples  int
}

type listenersPoint struct {
	Requested int                // listeners asked for
	Listeners int                // listeners there were
	PerSec    []float64          // saves per second, one per round
	CPU       []cpuPerOp         // CPU per save, this process and the server, one per round
	Latency   invalidationResult // writer -> one listener
}

func (p *listenersPoint) median() float64 { return median(p.PerSec) }

type listenersResult struct {
	Points         []*listenersPoint
	Writers        int
	MaxConnections int
	Free           int // client connections free at the start
	Duration       time.Duration
	Repeats        int
}

func runListeners(ctx context.Context, e *env, o listenersOptions, pr progress) (_ *listenersResult, err error) {
	free, maxConns, err := e.freeConnections(ctx)
	if err != nil {
		return nil, err
	}
	res := &listenersResult{Writers: o.writers, MaxConnections: maxConns, Free: free, Duration: o.duration, Repeats: o.repeats}
	limit := free - listenerMargin
	if limit < 1 {
		return nil, fmt.Errorf("the server takes %d more connections, too few to run even one listener", free)
	}

	writerPool, err := e.newPool(ctx, 2, nil)
	if err != nil {
		return nil, err
	}
	defer writerPool.Close()
	listenPool, err := e.newPool(ctx, 1, nil)
	if err != nil {
		return nil, err
	}
	defer listenPool.Close()
	writer, table, err := newPgsession(ctx, e, writerPool, pgsession.Config{CacheSize: -1, PurgeInterval: -1})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, e.dropTable(table)) }()
	defer writer.Close()

	var load, probe []*writerSession
	for i := range o.writers + 8 {
		w, err := newWriterSession(ctx, writer, payloadSmall)
		if err != nil {
			return nil, err
		}
		if i < o.writers {
			load = append(load, w)
		} else {
			probe = append(probe, w)
		}
	}

	var listeners []*pgsession.Store
	defer func() {
		for _, s := range listeners {
			_ = s.Close()
		}
	}()
	for _, want := range o.counts {
		n := min(want, limit)
		pr.printf("listeners: opening %d listening Stores", n)
		for len(listeners) < n {
			s, _, err := newPgsession(ctx, e, listenPool, pgsession.Config{
				Table: table, SkipCreateTable: true, PurgeInterval: -1, ScavengeInterval: -1,
			})
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "53300" && len(listeners) > 0 {
				// Something else took the connections meanwhile: stay
				// at what the server still took.
				pr.printf("listeners: the server refused listener %d (%s): staying at %d", len(listeners)+1, pgErr.Message, len(listeners))
				limit = len(listeners)
				break
			}
			if err != nil {
				return nil, fmt.Errorf("listener %d: %w", len(listeners)+1, err)
			}
			listeners = append(listeners, s)
		}
		pt := &listenersPoint{Requested: want, Listeners: len(listeners)}
		pr.printf("listeners: %d listeners: invalidation latency, %d samples", pt.Listeners, o.samples)
		if pt.Latency, err = measureEvictions(ctx, probe, listeners[0], o.samples, nil); err != nil {
			return nil, fmt.Errorf("%d listeners: %w", pt.Listeners, err)
		}
		for round := range o.repeats {
			pr.printf("listeners: %d listeners: throughput round %d/%d", pt.Listeners, round+1, o.repeats)
			cpu0 := takeCPU()
			t, err := timeParallel(o.duration, o.writers, func(i int) error { return load[i].change(ctx) })
			if err != nil {
				return nil, fmt.Errorf("%d listeners: %w", pt.Listeners, err)
			}
			pt.PerSec = append(pt.PerSec, t.perSecond())
			pt.CPU = append(pt.CPU, cpu0.perOp(takeCPU(), t.ops))
		}
		for i, s := range listeners {
			if st := s.Stats(); st.Listener != pgsession.ListenerUp || st.Notifications == 0 {
				return nil, fmt.Errorf("listener %d is %v and received %d notifications", i+1, st.Listener, st.Notifications)
			}
		}
		res.Points = append(res.Points, pt)
	}
	return res, nil
}
