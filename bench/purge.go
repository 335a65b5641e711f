package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgsession/pgsession"
)

// Purge under load. A Store (automatic purging off) on a table holding N
// expired rows, inserted with generate_series in chunks of 100,000 and
// then VACUUM ANALYZEd, as a table that autovacuum keeps would be. Savers
// goroutines keep saving sessions of their own (each Save a changed value)
// through the Store: first for a baseline period with no purge, then while
// Store.PurgeExpired deletes the N rows. The report compares the Save
// latency percentiles of the two phases and gives the rows purged per
// second.

type purgeOptions struct {
	rows     int
	savers   int
	baseline time.Duration
}

type purgeResult struct {
	Rows       int
	Purged     int64
	InsertTime time.Duration
	PurgeTime  time.Duration
	RowsPerSec float64
	Savers     int
	Baseline   dist // Save latency without a purge
	During     dist // Save latency while the purge ran
}

const purgeInsertChunk = 100_000

func runPurge(ctx context.Context, e *env, o purgeOptions, pr progress) (_ *purgeResult, err error) {
	res := &purgeResult{Rows: o.rows, Savers: o.savers}
	pool, err := e.newPool(ctx, o.savers+4, nil)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	s, table, err := newPgsession(ctx, e, pool, pgsession.Config{PurgeInterval: -1})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, e.dropTable(table)) }()
	defer s.Close()

	data, err := pgsession.DefaultSerializer{}.Serialize(payloadSmall.values())
	if err != nil {
		return nil, err
	}
	t := pgx.Identifier{table}.Sanitize()
	start := time.Now()
	for from := 1; from <= o.rows; from += purgeInsertChunk {
		to := min(from+purgeInsertChunk-1, o.rows)
		pr.printf("purge: inserting expired rows %d-%d of %d", from, to, o.rows)
		if _, err := pool.Exec(ctx, `INSERT INTO `+t+` (key_hash, data, expires_at)
			SELECT sha256(int8send(g)), $1::bytea, now() - interval '1 day'
			FROM generate_series($2::bigint, $3::bigint) g`, data, from, to); err != nil {
			return nil, fmt.Errorf("insert expired rows: %w", err)
		}
	}
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE `+t); err != nil {
		return nil, err
	}
	res.InsertTime = time.Since(start)

	var ws []*writerSession
	for range o.savers {
		w, err := newWriterSession(ctx, s, payloadSmall)
		if err != nil {
			return nil, err
		}
		ws = append(ws, w)
	}
	// savers runs the savers until until returns, and gives their Save
	// latencies.
	savers := func(until func() error) ([]time.Duration, error) {
		var stop atomic.Bool
		var wg sync.WaitGroup
		lat := make([][]time.Duration, len(ws))
		errs := make([]error, len(ws))
		for i, w := range ws {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					t0 := time.Now()
					if err := w.change(ctx); err != nil {
						errs[i] = err
						return
					}
					lat[i] = append(lat[i], time.Since(t0))
				}
			}()
		}
		uerr := until()
		stop.Store(true)
		wg.Wait()
		var all []time.Duration
		for _, l := range lat {
			all = append(all, l...)
		}
		return all, errors.Join(append(errs, uerr)...)
	}

	pr.printf("purge: %d savers, baseline for %v", o.savers, o.baseline)
	base, err := savers(func() error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(o.baseline):
			return nil
		}
	})
	if err != nil {
		return nil, err
	}
	res.Baseline = summarize(base)

	pr.printf("purge: %d savers, purging %d rows", o.savers, o.rows)
	during, err := savers(func() error {
		t0 := time.Now()
		n, err := s.PurgeExpired(ctx)
		res.PurgeTime = time.Since(t0)
		res.Purged = n
		return err
	})
	if err != nil {
		return nil, err
	}
	res.During = summarize(during)
	res.RowsPerSec = float64(res.Purged) / res.PurgeTime.Seconds()
	if res.Purged != int64(o.rows) {
		return nil, fmt.Errorf("PurgeExpired removed %d rows, want %d", res.Purged, o.rows)
	}
	return res, nil
}
