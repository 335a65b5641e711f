package pgsession

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// Group commit.
//
// A transaction that sent a notification takes a cluster-wide lock at
// commit and holds it through the WAL flush, so such commits serialize.
// The committer combines concurrent writes of one Store: a write that finds
// no commit in flight goes at once, alone; writes that arrive while one is
// in flight queue up and go together in the next transaction, one
// multi-row statement with one notification per 90 sessions. The lock is
// then taken once per batch, not once per write.

// batchTimeout bounds the commit of a batch: it runs detached from the
// request that happens to carry it, since other requests' writes ride in it.
const batchTimeout = 30 * time.Second

// notifyItemsPerPayload keeps a batch's notifications under maxPayload: an
// item is at most 64 hex digits, a colon, 19 digits and a space.
const notifyItemsPerPayload = 90

// writeOp is one write of a session (or a delete) waiting to commit.
type writeOp struct {
	key        keyHash
	data       []byte // nil for a delete
	lifetimeUS int64
	del        bool

	// The outcome, set before done is closed.
	version    int64 // the row version written; for a delete, 1 if a row was deleted
	superseded bool  // a later write of the same session in the batch won
	err        error

	done chan struct{}   // closed when the outcome is set
	lead chan []*writeOp // receives a batch this op's goroutine must commit
}

// committer batches the writes of one Store.
type committer struct {
	s   *Store
	max int // largest batch

	mu    sync.Mutex // protects busy, queue
	busy  bool       // a commit is in flight
	queue []*writeOp
}

// write commits op, alone or in a batch, and returns once op's own outcome
// is known.
func (c *committer) write(ctx context.Context, op *writeOp) {
	op.done = make(chan struct{})
	c.mu.Lock()
	if !c.busy {
		c.busy = true
		c.mu.Unlock()
		c.commitAndHandOff(ctx, []*writeOp{op})
		return
	}
	op.lead = make(chan []*writeOp, 1)
	c.queue = append(c.queue, op)
	c.mu.Unlock()
	select {
	case <-op.done:
	case batch := <-op.lead:
		// Chosen to carry the next batch (op is in it). The request's
		// context must not cancel the others' writes.
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), batchTimeout)
		defer cancel()
		c.commitAndHandOff(bctx, batch)
	}
}

// commitAndHandOff commits batch, hands whatever queued up meanwhile to the
// first of those writers to commit next, and then releases batch's writers.
func (c *committer) commitAndHandOff(ctx context.Context, batch []*writeOp) {
	c.s.commit(ctx, batch)
	c.mu.Lock()
	if len(c.queue) == 0 {
		c.busy = false
		c.mu.Unlock()
	} else {
		n := min(len(c.queue), c.max)
		next := make([]*writeOp, n)
		copy(next, c.queue)
		c.queue = append(c.queue[:0], c.queue[n:]...)
		c.mu.Unlock()
		next[0].lead <- next
	}
	for _, op := range batch {
		close(op.done)
	}
}

// commit writes batch and sets every op's outcome. Two writes of one
// session in a batch: the later wins, and the earlier learns the outcome of
// the later. But a save queued after a delete of its session is refused
// with ErrDeleted, as it would have been one batch later: a logout is never
// undone by a request that loaded the session before it. A multi-row batch
// that fails is retried write by write, so one bad write cannot fail the
// others.
func (s *Store) commit(ctx context.Context, batch []*writeOp) {
	last := make(map[keyHash]*writeOp, len(batch))
	var unique []*writeOp
	for _, op := range batch {
		prev, seen := last[op.key]
		if seen && prev.del && !op.del {
			op.err = ErrDeleted
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
		s.commitOne(ctx, unique[0])
	} else if err := s.commitMany(ctx, unique); err != nil {
		s.counters.batchRetries.Add(1)
		s.log.Debug("pgsession: batch failed, retrying write by write", "writes", len(unique), "err", err)
		for _, op := range unique {
			s.commitOne(ctx, op)
		}
	}
	for _, op := range batch {
		if w := last[op.key]; w != op && !errors.Is(op.err, ErrDeleted) {
			op.version, op.err, op.superseded = w.version, w.err, true
		}
	}
}

// commitMany writes ops, of distinct sessions, in one statement.
func (s *Store) commitMany(ctx context.Context, ops []*writeOp) error {
	// Rows are locked in key order, so that two instances committing
	// batches of the same sessions cannot deadlock.
	ops = slices.Clone(ops)
	slices.SortFunc(ops, func(a, b *writeOp) int { return bytes.Compare(a.key[:], b.key[:]) })
	var keys, data [][]byte
	var lifetimes []int64
	var dels [][]byte
	for _, op := range ops {
		if op.del {
			dels = append(dels, op.key[:])
			continue
		}
		keys, data, lifetimes = append(keys, op.key[:]), append(data, op.data), append(lifetimes, op.lifetimeUS)
	}
	rows, err := s.pool.Query(ctx, s.sql.batch, keys, data, lifetimes, dels, s.cfg.Channel, s.prefix)
	if err != nil {
		return err
	}
	versions := make(map[keyHash]int64, len(ops))
	for rows.Next() {
		var k []byte
		var v int64
		if err := rows.Scan(&k, &v); err != nil {
			rows.Close()
			return err
		}
		versions[keyHash(k)] = v
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, op := range ops {
		v, ok := versions[op.key]
		switch {
		case op.del && ok:
			op.version = 1
		case op.del:
			op.version = 0 // nothing to delete
		case !ok:
			op.err = ErrDeleted // the upsert met a tombstone
		default:
			op.version = v
		}
	}
	return nil
}
