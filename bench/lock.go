package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgsession/pgsession"
)

// Head-of-line blocking under a row lock (issue 11): does one session's
// row, locked by another transaction, delay the writes of other sessions?
//
// One Store, default Config (group commit on, the default MaxBatch), on a
// pool of its own and a table of its own. W writers (default 8) each save
// a changed value to a session of their own, existing, over and over, for
// a fixed time, in two phases:
//
//   - no lock: the writers alone;
//   - one row locked: another connection (not the Store's pool) has run
//     SELECT ... FOR UPDATE on the row of one more session and keeps its
//     transaction open, and one more goroutine keeps saving that session,
//     each Save under a request deadline (default 1 s). It cannot succeed
//     while the lock is held: every attempt should end in an error
//     wrapping context.DeadlineExceeded, promptly.
//
// Each round runs both phases, the order alternating from round to round.
// The writers stop when the phase's time is up; the locked session's
// writer finishes its attempt under way; then the lock is released (the
// transaction rolled back). Per phase: the writers' Save latency (p50,
// p99, max, over all rounds), their saves per second (median of the
// rounds), the table's HOT ratio (settled counters around the writers'
// saves, see hot.go) and the Store's batching counters. For the locked
// session's writer: how its attempts ended and how long they took, and how
// many versions its row gained once the lock was released: a write that
// returned ErrUncertain was sent and may still commit.

type lockOptions struct {
	writers  int
	duration time.Duration // of one phase in one round
	repeats  int
	deadline time.Duration // request deadline of each Save of the locked session
}

const (
	phaseFree   = "no lock"
	phaseLocked = "one row locked"
)

// lockPhase is the writers' measurements of one phase over all rounds.
type lockPhase struct {
	Phase   string
	PerSec  []float64 // the writers' saves per second, one per round
	Saves   int64     // over all rounds
	Latency dist      // of every save of every round
	HOT     hotStats  // the table's updates during the writers' saves

	// The Store's counters over the phase's rounds.
	Batches, BatchedWrites, LockWaits int64

	lat latencies
}

func (p *lockPhase) median() float64 { return median(p.PerSec) }

// lockedWriterResult is what the writer of the locked session saw.
type lockedWriterResult struct {
	Attempts  int
	Succeeded int    // Saves that returned success while the lock was held: should be none
	Deadline  int    // errors wrapping context.DeadlineExceeded
	Uncertain int    // errors wrapping pgsession.ErrUncertain: sent, may still commit
	Other     int    // errors of any other kind
	OtherErr  string `json:",omitempty"` // the first of them
	Late      int    // attempts that returned more than lockLateness after their deadline
	Latency   dist   // Save's call to its return

	// CommittedLater is how many versions the locked row gained after the
	// lock was released (counted until it stopped changing), beyond the
	// attempts that succeeded: writes whose Save had returned an error.
	// pgx closes a connection whose context ended and sends the server a
	// cancel request; the lock goes as soon as the last attempt returned,
	// so that attempt's statement commits when its cancel lands late.
	CommittedLater int64
}

type lockResult struct {
	Writers  int
	Duration time.Duration // of one phase in one round
	Repeats  int
	Deadline time.Duration
	MaxBatch int // the Store's: the default
	Phases   []*lockPhase
	Locked   lockedWriterResult
	P99Ratio float64 // writers' p99 with the lock over without; 0 when not measured
}

func (r *lockResult) phase(name string) *lockPhase {
	if r == nil {
		return nil
	}
	for _, p := range r.Phases {
		if p.Phase == name {
			return p
		}
	}
	return nil
}

// lockLateness is how long after its deadline a Save may return and still
// count as prompt (issue 11: within ~50 ms).
const lockLateness = 50 * time.Millisecond

func runLock(ctx context.Context, e *env, o lockOptions, pr progress) (_ *lockResult, err error) {
	res := &lockResult{Writers: o.writers, Duration: o.duration, Repeats: o.repeats, Deadline: o.deadline, MaxBatch: pgsession.DefaultMaxBatch}
	free, locked := &lockPhase{Phase: phaseFree}, &lockPhase{Phase: phaseLocked}
	res.Phases = []*lockPhase{free, locked}

	// Room for every writer, the locked session's writer (which holds a
	// connection while it waits), a batch in flight and the Store's own
	// checks; the listener's connection is its own.
	pool, err := e.newPool(ctx, o.writers+4, nil)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	s, table, err := newPgsession(ctx, e, pool, pgsession.Config{})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, e.dropTable(table)) }()
	defer s.Close()
	t := pgx.Identifier{table}.Sanitize()

	// The locked session goes first, into the empty table: its row is the
	// only one, so its key is known without knowing how keys are made.
	target, err := newWriterSession(ctx, s, payloadSmall)
	if err != nil {
		return nil, err
	}
	var key []byte
	var rows int
	if err := pool.QueryRow(ctx, `SELECT key_hash, count(*) OVER () FROM `+t).Scan(&key, &rows); err != nil {
		return nil, err
	}
	if rows != 1 {
		return nil, fmt.Errorf("%d rows after the first session, want 1", rows)
	}
	version := func() (int64, error) {
		var v int64
		err := pool.QueryRow(ctx, `SELECT version FROM `+t+` WHERE key_hash = $1`, key).Scan(&v)
		return v, err
	}
	var ws []*writerSession
	for range o.writers {
		w, err := newWriterSession(ctx, s, payloadSmall)
		if err != nil {
			return nil, err
		}
		ws = append(ws, w)
	}
	// The other connection, which takes the lock.
	holder, err := pgx.Connect(ctx, e.dbURL)
	if err != nil {
		return nil, err
	}
	defer holder.Close(context.Background())

	var lmu sync.Mutex
	lockedLat := &latencies{}
	// tryLocked is one Save of the locked session under its deadline.
	tryLocked := func() {
		rctx, cancel := context.WithTimeout(ctx, o.deadline)
		t0 := time.Now()
		err := target.change(rctx)
		d := time.Since(t0)
		cancel()
		lockedLat.add(d)
		lmu.Lock()
		defer lmu.Unlock()
		l := &res.Locked
		l.Attempts++
		if d > o.deadline+lockLateness {
			l.Late++
		}
		if errors.Is(err, pgsession.ErrUncertain) {
			l.Uncertain++
		}
		switch {
		case err == nil:
			l.Succeeded++
		case errors.Is(err, context.DeadlineExceeded):
			l.Deadline++
		default:
			l.Other++
			if l.OtherErr == "" {
				l.OtherErr = err.Error()
			}
		}
	}

	// phase runs the writers for d (and, with lock, the locked session's
	// writer under the lock) and adds what they did to ph.
	phase := func(ph *lockPhase, lock bool, d time.Duration) (err error) {
		var v0 int64
		var tx pgx.Tx
		if lock {
			if v0, err = version(); err != nil {
				return err
			}
			if tx, err = holder.Begin(ctx); err != nil {
				return err
			}
			defer func() {
				if tx != nil {
					err = errors.Join(err, tx.Rollback(context.Background()))
				}
			}()
			if _, err = tx.Exec(ctx, `SELECT FROM `+t+` WHERE key_hash = $1 FOR UPDATE`, key); err != nil {
				return fmt.Errorf("lock the row: %w", err)
			}
		}
		st0 := s.Stats()
		before, err := e.settledStats(ctx, t, pool)
		if err != nil {
			return err
		}
		var (
			stop    atomic.Bool
			wg, lwg sync.WaitGroup
			lat     = make([][]time.Duration, len(ws))
			errs    = make([]error, len(ws))
			saves   atomic.Int64
			ready   = make(chan struct{})
			won0    = res.Locked.Succeeded
		)
		for i, w := range ws {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-ready
				for !stop.Load() {
					t0 := time.Now()
					if err := w.change(ctx); err != nil {
						errs[i] = err
						stop.Store(true)
						return
					}
					lat[i] = append(lat[i], time.Since(t0))
					saves.Add(1)
				}
			}()
		}
		if lock {
			lwg.Add(1)
			go func() {
				defer lwg.Done()
				<-ready
				for !stop.Load() {
					tryLocked()
				}
			}()
		}
		start := time.Now()
		close(ready)
		timer := time.NewTimer(d)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
		}
		stop.Store(true)
		wg.Wait()
		wall := time.Since(start)
		if err := errors.Join(append(errs, ctx.Err())...); err != nil {
			lwg.Wait()
			return err
		}
		after, err := e.settledStats(ctx, t, pool)
		if err != nil {
			lwg.Wait()
			return err
		}
		// The locked session's writer ends its attempt under way (at most
		// its deadline) before the lock goes.
		lwg.Wait()
		st1 := s.Stats()
		n := saves.Load()
		ph.PerSec = append(ph.PerSec, float64(n)/wall.Seconds())
		ph.Saves += n
		for _, l := range lat {
			ph.lat.addAll(l)
		}
		ph.HOT.add(before, after, n)
		ph.Batches += st1.Batches - st0.Batches
		ph.BatchedWrites += st1.BatchedWrites - st0.BatchedWrites
		ph.LockWaits += st1.LockWaits - st0.LockWaits
		if !lock {
			return nil
		}
		err, tx = tx.Rollback(ctx), nil
		if err != nil {
			return err
		}
		// Writes sent under the lock whose request gave up may still
		// commit once it is gone: count the row's versions until they
		// stop changing.
		v, err := version()
		if err != nil {
			return err
		}
		for still, limit := time.Now(), time.Now().Add(5*time.Second); time.Since(still) < 300*time.Millisecond && time.Now().Before(limit); {
			time.Sleep(20 * time.Millisecond)
			v1, err := version()
			if err != nil {
				return err
			}
			if v1 != v {
				v, still = v1, time.Now()
			}
		}
		res.Locked.CommittedLater += v - v0 - int64(res.Locked.Succeeded-won0)
		return nil
	}

	// Warm the writers' path: connections, statements, plans.
	pr.printf("lock: warm-up")
	if err := phase(&lockPhase{}, false, max(o.duration/4, 100*time.Millisecond)); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	for round := range o.repeats {
		order := []*lockPhase{free, locked}
		if round%2 == 1 {
			order = []*lockPhase{locked, free}
		}
		for _, ph := range order {
			pr.printf("lock: round %d/%d, %s", round+1, o.repeats, ph.Phase)
			if err := phase(ph, ph == locked, o.duration); err != nil {
				return nil, fmt.Errorf("%s: %w", ph.Phase, err)
			}
		}
	}
	for _, ph := range res.Phases {
		ph.Latency = ph.lat.dist()
	}
	res.Locked.Latency = lockedLat.dist()
	if q := float64(locked.Latency.P99) / float64(free.Latency.P99); !math.IsNaN(q) && !math.IsInf(q, 0) {
		res.P99Ratio = q
	}
	if res.Locked.Attempts == 0 {
		return nil, errors.New("the locked session's writer made no attempt")
	}
	return res, nil
}
