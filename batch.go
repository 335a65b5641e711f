package pgsession

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Group commit.
//
// A transaction that sent a notification takes a cluster-wide lock at
// commit and holds it through the WAL flush, so such commits serialize.
// The committer combines concurrent writes of one Store: a write that finds
// no commit in flight goes at once, alone, on its caller's goroutine;
// writes that arrive while one is in flight queue up and go together in
// the next transaction, one multi-row statement with one notification per
// 90 sessions, on a goroutine of the committer's own. The lock is then
// taken once per batch, not once per write.
//
// No write waits for another's row lock: the committer's statements skip
// rows other transactions hold (FOR UPDATE SKIP LOCKED) and hand those
// writes back to their callers, which write them alone, waiting only under
// their own context. Each caller waits for its write under its own context
// too: a write still queued when its context ends is taken out (nothing
// written); one already sent may still commit (ErrUncertain).

// notifyItemsPerPayload keeps a batch's notifications under maxPayload: an
// item is at most 64 hex digits, a colon, 19 digits and a space.
const notifyItemsPerPayload = 90

// writeOp is one write of a session (or a delete) waiting to commit.
type writeOp struct {
	key        keyHash
	data       []byte // nil for a delete
	lifetimeUS int64
	lagUS      int64 // the refresh lag: a stored expiry this close to the new one stays
	del        bool
	meta       rowMeta

	// The outcome, set before done is closed (or before commit returns).
	res     writeResult
	err     error
	skipped bool // another transaction holds the row: the caller writes it alone

	done chan struct{} // closed when the outcome is set; nil for a write committed by its caller
}

// writeResult is what a write stored.
type writeResult struct {
	version     int64         // the row version written; for a delete, 1 if a row was deleted
	remaining   time.Duration // the row's lifetime left after the write, on the database clock
	superseded  bool          // a later write of the same session in the batch won
	userChanged bool          // nothing written: the row is live with another user (Config.UserKey)
}

// committer batches the writes of one Store.
type committer struct {
	s   *Store
	max int // largest batch

	mu    sync.Mutex // protects busy, queue
	busy  bool       // a commit is in flight
	queue []*writeOp
}

// write commits op, alone or in a batch, and returns once op's outcome is
// known or ctx ends.
func (c *committer) write(ctx context.Context, op *writeOp) (writeResult, error) {
	c.mu.Lock()
	if !c.busy {
		c.busy = true
		c.mu.Unlock()
		c.s.commit(ctx, []*writeOp{op})
		c.next()
		return c.s.finish(ctx, op)
	}
	op.done = make(chan struct{})
	c.queue = append(c.queue, op)
	c.mu.Unlock()
	select {
	case <-op.done:
		return c.s.finish(ctx, op)
	case <-ctx.Done():
	}
	c.mu.Lock()
	if i := slices.Index(c.queue, op); i >= 0 {
		c.queue = slices.Delete(c.queue, i, i+1)
		c.mu.Unlock()
		return writeResult{}, notSent(ctx)
	}
	c.mu.Unlock()
	select {
	case <-op.done: // finished meanwhile
		return c.s.finish(ctx, op)
	default:
		return writeResult{}, sentUncertain(ctx)
	}
}

// next starts a goroutine that commits what queued up while the caller's
// own write was in flight, batch after batch, or marks the committer idle.
func (c *committer) next() {
	c.mu.Lock()
	if len(c.queue) == 0 {
		c.busy = false
		c.mu.Unlock()
		return
	}
	batch := c.takeLocked()
	c.mu.Unlock()
	c.s.wg.Go(func() { c.run(batch) })
}

// takeLocked takes the next batch off the queue.
func (c *committer) takeLocked() []*writeOp {
	n := min(len(c.queue), c.max)
	batch := slices.Clone(c.queue[:n])
	c.queue = slices.Delete(c.queue, 0, n)
	return batch
}

// run commits batch, and then each batch that queued up meanwhile, until
// the queue is empty. A batch is bounded by the write timeout, not by any
// one request's context: other requests' writes ride in it.
func (c *committer) run(batch []*writeOp) {
	for {
		ctx, cancel := c.s.writeContext(context.Background())
		c.s.commit(ctx, batch)
		cancel()
		for _, op := range batch {
			close(op.done)
		}
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.busy = false
			c.mu.Unlock()
			return
		}
		batch = c.takeLocked()
		c.mu.Unlock()
	}
}

// commit writes batch and sets every op's outcome, skipping (never waiting
// for) rows other transactions hold. Two writes of one session in a batch:
// the later wins, and the earlier learns the outcome of the later. But a
// save queued after a delete of its session is refused with ErrDeleted, as
// it would have been one batch later: a logout is never undone by a request
// that loaded the session before it. A multi-row batch that fails is
// retried write by write, each under a write timeout of its own (retries
// that start within one slot of the timeout share it: see writeBound), so
// one bad write cannot fail the others; a batch that ran out of time is not
// retried: its writes may have committed.
func (s *Store) commit(ctx context.Context, batch []*writeOp) {
	last := make(map[keyHash]*writeOp, len(batch))
	var unique []*writeOp
	for _, op := range batch {
		prev, seen := last[op.key]
		if seen && prev.del && !op.del {
			// After the delete, alone: it meets the tombstone (ErrDeleted)
			// if the delete committed, and writes if the delete did not.
			op.skipped = true
			continue
		}
		if !seen {
			unique = append(unique, op)
		}
		last[op.key] = op
	}
	for i, op := range unique {
		unique[i] = last[op.key]
	}
	if len(batch) > 1 {
		s.counters.batches.Add(1)
		s.counters.batchedWrites.Add(int64(len(batch)))
	}
	if len(unique) == 1 {
		s.commitOne(ctx, unique[0], true, false)
	} else if err := s.commitMany(ctx, unique); err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) && !pgconn.SafeToRetry(err) {
			// It may have committed: writing it again would bump versions
			// and notify twice, or meet a logout made since.
			for _, op := range unique {
				op.err = classify(ctx, err)
			}
		} else {
			s.counters.batchRetries.Add(1)
			s.log.Debug("pgsession: batch failed, retrying write by write", "writes", len(unique), "err", err)
			for _, op := range unique {
				octx, cancel := s.writeContext(context.Background())
				s.commitOne(octx, op, true, false)
				cancel()
			}
		}
	}
	for _, op := range batch {
		if w := last[op.key]; w != op && !op.skipped {
			if w.skipped {
				// The later write goes alone, waiting for the lock; this
				// one is superseded by it, as in a batch, and writes nothing.
				op.res = writeResult{superseded: true}
				continue
			}
			op.res, op.err = w.res, w.err
			op.res.superseded = true
		}
	}
}

// commitMany writes ops, of distinct sessions, in one statement.
func (s *Store) commitMany(ctx context.Context, ops []*writeOp) error {
	ops = slices.Clone(ops)
	slices.SortFunc(ops, func(a, b *writeOp) int { return bytes.Compare(a.key[:], b.key[:]) })
	var keys, data [][]byte
	var lifetimes, lags []int64
	var dels [][]byte
	var users, ips, agents []*string
	for _, op := range ops {
		if op.del {
			dels = append(dels, op.key[:])
			continue
		}
		keys, data = append(keys, op.key[:]), append(data, op.data)
		lifetimes, lags = append(lifetimes, op.lifetimeUS), append(lags, op.lagUS)
		users, ips, agents = append(users, op.meta.user), append(ips, op.meta.clientIP), append(agents, op.meta.userAgent)
	}
	rows, err := s.pool.Query(ctx, s.sql.batch, keys, data, lifetimes, lags, dels, s.cfg.Channel, s.prefix,
		users, ips, agents, s.absoluteUS())
	if err != nil {
		return err
	}
	type outcome struct{ version, remainingUS int64 }
	got := make(map[keyHash]outcome, len(ops))
	for rows.Next() {
		var k []byte
		var o outcome
		if err := rows.Scan(&k, &o.version, &o.remainingUS); err != nil {
			rows.Close()
			return err
		}
		got[keyHash(k)] = o
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, op := range ops {
		o, ok := got[op.key]
		switch {
		case ok && o.version == userChanged:
			op.res.userChanged = true
		case ok && o.version < 0:
			op.skipped = true
		case op.del && ok:
			op.res.version = 1
		case op.del:
			op.res.version = 0 // nothing to delete
		case !ok:
			op.err = ErrDeleted // the upsert met a tombstone
		default:
			op.res.version = o.version
			op.res.remaining = time.Duration(o.remainingUS) * time.Microsecond
		}
	}
	return nil
}
