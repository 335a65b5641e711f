package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// HOT updates. An UPDATE that changes no indexed column and finds room on
// the row's own page is a heap-only tuple (HOT) update: it touches no
// index. pg_stat_user_tables counts every update (n_tup_upd, an ON
// CONFLICT DO UPDATE included) and the HOT ones (n_tup_hot_upd); a
// scenario reads both, settled, before and after what it measures, and
// reports the share of HOT updates in between.
//
// Settled: since PostgreSQL 15 each backend keeps its counts in local
// memory and adds them to the shared statistics when a transaction ends,
// at most once a second (PGSTAT_MIN_INTERVAL), or after 10 s idle. So
// every idle connection of the pools that wrote is asked to flush
// (pg_stat_force_next_flush(), which takes effect when its statement ends,
// before the server answers), and the counters are then read, with the
// snapshot cleared, until two reads 50 ms apart agree (at most
// statsSettleLimit). On a server without pg_stat_force_next_flush (before
// 15), the suite waits out the interval and runs an empty statement on
// each connection instead.

// statsSettleLimit bounds the wait for the counters to stop changing.
const statsSettleLimit = 5 * time.Second

// tableStats are a table's cumulative row counters.
type tableStats struct {
	Updates, HotUpdates, Inserts int64
	settled                      bool // the last two reads agreed
}

// hotStats are the updates of a measurement, summed over its rounds.
type hotStats struct {
	Updates    int64   // n_tup_upd between the snapshots
	HotUpdates int64   // n_tup_hot_upd between the snapshots
	Inserts    int64   // n_tup_ins between the snapshots: 0 when every write updated an existing row
	Ops        int64   // operations measured in between
	Ratio      float64 // HotUpdates / Updates; 0 with no update
	Unsettled  int     // snapshots whose counters still moved when statsSettleLimit ran out
}

// add adds the difference between two snapshots taken around ops
// operations.
func (h *hotStats) add(before, after tableStats, ops int64) {
	h.Updates += after.Updates - before.Updates
	h.HotUpdates += after.HotUpdates - before.HotUpdates
	h.Inserts += after.Inserts - before.Inserts
	h.Ops += ops
	for _, s := range []tableStats{before, after} {
		if !s.settled {
			h.Unsettled++
		}
	}
	h.Ratio = 0
	if h.Updates > 0 {
		h.Ratio = float64(h.HotUpdates) / float64(h.Updates)
	}
}

// updatesPerOp is how many rows each operation updated.
func (h *hotStats) updatesPerOp() float64 { return float64(h.Updates) / float64(max(h.Ops, 1)) }

// settledStats flushes the statistics of every idle connection of pools
// and returns table's counters once they stop changing. table is a
// (quoted, possibly schema-qualified) name as regclass reads it.
func (e *env) settledStats(ctx context.Context, table string, pools ...*pgxpool.Pool) (tableStats, error) {
	for _, p := range pools {
		if err := flushStats(ctx, p); err != nil {
			return tableStats{}, err
		}
	}
	read := func() (tableStats, error) {
		var s tableStats
		c, err := e.pool.Acquire(ctx)
		if err != nil {
			return s, err
		}
		defer c.Release()
		if _, err := c.Exec(ctx, `SELECT pg_stat_clear_snapshot()`); err != nil {
			return s, err
		}
		err = c.QueryRow(ctx, `SELECT n_tup_upd, n_tup_hot_upd, n_tup_ins FROM pg_stat_user_tables WHERE relid = $1::regclass`, table).
			Scan(&s.Updates, &s.HotUpdates, &s.Inserts)
		if err != nil {
			return s, fmt.Errorf("pg_stat_user_tables of %s: %w", table, err)
		}
		return s, nil
	}
	prev, err := read()
	if err != nil {
		return prev, err
	}
	deadline := time.Now().Add(statsSettleLimit)
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		s, err := read()
		if err != nil {
			return s, err
		}
		if s == prev {
			s.settled = true
			return s, nil
		}
		prev = s
	}
	return prev, nil
}

// flushStats makes every idle connection of pool add its pending
// statistics to the shared ones.
func flushStats(ctx context.Context, pool *pgxpool.Pool) error {
	conns := pool.AcquireAllIdle(ctx)
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	for i, c := range conns {
		_, err := c.Exec(ctx, `SELECT pg_stat_force_next_flush()`)
		var pgErr *pgconn.PgError
		if err != nil && errors.As(err, &pgErr) && (pgErr.Code == "42883" || pgErr.Code == "42501") {
			// Before PostgreSQL 15 (or without the right to call it): a
			// transaction's end flushes once the interval has passed.
			time.Sleep(1100 * time.Millisecond)
			for _, c := range conns[i:] {
				if _, err := c.Exec(ctx, `SELECT 1`); err != nil {
					return err
				}
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}
