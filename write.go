package pgsession

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/sessions"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The write path below Save and the admin API: every write of a session
// goes through write, alone or group-committed (see batch.go).

// write commits a write (or, with del, a delete) of k, batched with
// concurrent ones unless batching is off, and returns once it committed,
// failed or ctx ended. For a delete, the version is 1 if a row was deleted.
// A superseded result means a later write of k in the same batch won, so
// this one's data is not what is stored.
//
// When ctx ends first, the error wraps ctx's error, and tells what was
// stored: a write not yet sent wrote nothing; one sent may still commit
// (ErrUncertain).
func (s *Store) write(ctx context.Context, k keyHash, data []byte, lifetime time.Duration, del bool, meta rowMeta) (writeResult, error) {
	op := &writeOp{key: k, data: data, lifetimeUS: lifetime.Microseconds(), lagUS: s.cfg.refreshLag(lifetime).Microseconds(), del: del, meta: meta}
	var res writeResult
	var err error
	if s.commits == nil {
		s.commitOne(ctx, op, true, false)
		res, err = s.finish(ctx, op)
	} else {
		res, err = s.commits.write(ctx, op)
	}
	return res, explain(err)
}

// finish returns op's outcome, first writing it alone, under the caller's
// own context, if the committer skipped it because another transaction
// holds its row: only this write waits for that lock.
//
// It waits without holding a connection: it tries again, still skipping a
// held row, with a backoff of 5 ms doubling to 100 ms, so that however many
// requests wait for locked rows, the pool stays free for everyone else.
// The retries poll with SKIP LOCKED (see queries.upsertSkip).
func (s *Store) finish(ctx context.Context, op *writeOp) (writeResult, error) {
	if !op.skipped {
		return op.res, op.err
	}
	s.counters.lockWaits.Add(1)
	wait := lockPollMin
	for op.skipped {
		op.skipped = false
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return writeResult{}, notSent(ctx) // every try so far wrote nothing
		case <-t.C:
		}
		s.commitOne(ctx, op, true, true)
		wait = min(2*wait, lockPollMax)
	}
	return op.res, op.err
}

// The backoff of a write waiting for a row another transaction holds.
const (
	lockPollMin = 5 * time.Millisecond
	lockPollMax = 100 * time.Millisecond
)

// commitOne writes op in a statement of its own. With skip, a lock another
// transaction holds is not waited for: op.skipped is set instead. A first
// try fails on the lock timeout (noWait), which costs nothing when no lock
// is held; a retry (poll) skips a held row without an error.
func (s *Store) commitOne(ctx context.Context, op *writeOp, skip, poll bool) {
	var err error
	switch {
	case op.del:
		q := s.sql.delete
		switch {
		case skip && poll:
			q = s.sql.deleteSkip
		case skip:
			q = s.sql.deleteNoWait
		}
		var n int64
		if err = s.pool.QueryRow(ctx, q, op.key[:], s.cfg.Channel, s.prefix).Scan(&n); err == nil {
			op.skipped, op.res.version = n < 0, max(n, 0)
		}
	default:
		q := s.sql.upsert
		switch {
		case skip && poll:
			q = s.sql.upsertSkip
		case skip:
			q = s.sql.upsertNoWait
		}
		var remainingUS int64
		err = s.pool.QueryRow(ctx, q, op.key[:], op.data, op.lifetimeUS, op.lagUS, s.cfg.Channel, s.prefix,
			op.meta.user, op.meta.clientIP, op.meta.userAgent, s.absoluteUS()).Scan(&op.res.version, &remainingUS)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			err = ErrDeleted // the upsert met a tombstone
		case err == nil && op.res.version == userChanged:
			op.res.version, op.res.userChanged = 0, true
		case err == nil && op.res.version < 0:
			op.skipped, op.res.version = true, 0
		case err == nil:
			op.res.remaining = time.Duration(remainingUS) * time.Microsecond
		}
	}
	if skip && isLockTimeout(err) {
		// The statement failed as a whole: it wrote and notified nothing.
		op.skipped, op.res, err = true, writeResult{}, nil
	}
	op.err = classify(ctx, err)
}

// isLockTimeout reports whether err is a statement's failure to get a lock
// within its lock_timeout (noWait): SQLSTATE 55P03, lock_not_available.
func isLockTimeout(err error) bool {
	if err == nil {
		return false // before errors.As, whose target escapes
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "55P03"
}

// classify tells what a failed write means for what is stored. PostgreSQL's
// own error means the statement failed as a whole: nothing committed. An
// error before anything was sent: nothing written. Any other (the context
// ended, or the connection broke, after the statement was sent): it may
// have committed, ErrUncertain.
func classify(ctx context.Context, err error) error {
	if err == nil {
		return nil // before errors.As, whose target escapes
	}
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, ErrDeleted) || errors.As(err, &pgErr):
		return err
	case pgconn.SafeToRetry(err):
		if ctx.Err() != nil {
			return notSent(ctx)
		}
		return err
	case ctx.Err() != nil:
		return sentUncertain(ctx)
	default:
		return fmt.Errorf("%w: %w", ErrUncertain, err)
	}
}

// absoluteUS is the absolute timeout in microseconds, the last parameter
// of every upsert: nil (NULL) when there is none.
func (s *Store) absoluteUS() any {
	if s.cfg.AbsoluteTimeout <= 0 {
		return nil
	}
	return s.cfg.AbsoluteTimeout.Microseconds()
}

// notSent is the error of a write whose context ended before it was sent.
func notSent(ctx context.Context) error {
	return fmt.Errorf("nothing written: %w", context.Cause(ctx))
}

// sentUncertain is the error of a write whose context ended after it was
// sent.
func sentUncertain(ctx context.Context) error {
	return fmt.Errorf("%w: %w", ErrUncertain, context.Cause(ctx))
}

// writeContext bounds a write by Config.WriteTimeout, unless ctx ends
// sooner or the timeout is off. The bound is a context the writes that
// start within the same slot share (see writeBound), so that a write
// arms no timer of its own: a context with a deadline makes the
// runtime add a timer, often waking an idle thread to watch it, and the
// writes of one request at a time paid several µs of wall time for it.
// context.Background or TODO (a batch, a request made by httptest) is
// replaced by the bound; any other ctx is joined to it (see joined),
// keeping its values and its cancellation.
func (s *Store) writeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.cfg.WriteTimeout <= 0 {
		return ctx, func() {}
	}
	bound, deadline := s.bound.at(time.Now())
	if d, ok := ctx.Deadline(); ok && !d.After(deadline) {
		return ctx, func() {} // ends first: the bound adds nothing
	}
	if ctx == context.Background() || ctx == context.TODO() {
		return bound, func() {}
	}
	c, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(bound, func() { cancel(context.DeadlineExceeded) })
	return joined{c, deadline}, func() {
		stop()
		cancel(context.Canceled)
	}
}

// joined is a request's context under a write bound: it ends when either
// does, as context.WithDeadline would, but with no timer of its own. Its
// Err is context.DeadlineExceeded when the bound ended it (pgx builds its
// errors from Err, the store's from context.Cause: both say the write
// timed out), and Deadline is the bound's, the sooner. Done, Value and
// Cause are the embedded context's, a context.WithCancelCause of the
// request's, so contexts derived from it (pgx's AfterFunc) attach to that
// one's cancellation, without a goroutine. A context derived from it
// before the bound ends reports context.Canceled from its own Err, and
// the bound (DeadlineExceeded) from context.Cause: pgx reads the Err of
// the context it is given, this one, unless a tracer swaps it for a child.
type joined struct {
	context.Context
	deadline time.Time
}

func (j joined) Deadline() (time.Time, bool) { return j.deadline, true }

func (j joined) Err() error {
	err := j.Context.Err()
	if err != nil && errors.Is(context.Cause(j.Context), context.DeadlineExceeded) {
		return context.DeadlineExceeded
	}
	return err
}

// writeBound hands out the contexts that bound writes by the write
// timeout. Time is cut into slots of boundSlots-th of the timeout; every
// write that starts within a slot shares one context, which ends a whole
// timeout after the slot began. So a write gets at most the timeout and
// at least all but one slot of it (at most a second less), and the store
// keeps one timer per slot, not one per write.
type writeBound struct {
	timeout time.Duration
	slot    time.Duration
	mu      sync.Mutex // held to start a slot
	cur     atomic.Pointer[boundSlot]
}

// boundSlot is the context of the writes that start before end.
type boundSlot struct {
	ctx      context.Context
	cancel   context.CancelFunc
	end      time.Time // the slot's end
	deadline time.Time // ctx's
}

// boundSlots is how many slots a write timeout spans, at least.
const boundSlots = 32

func newWriteBound(timeout time.Duration) *writeBound {
	return &writeBound{timeout: timeout, slot: min(timeout/boundSlots, time.Second)}
}

// at returns the context of the writes starting at now (a reading of the
// real clock), and its deadline.
func (b *writeBound) at(now time.Time) (context.Context, time.Time) {
	if c := b.cur.Load(); c != nil && now.Before(c.end) {
		return c.ctx, c.deadline
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if c := b.cur.Load(); c != nil && now.Before(c.end) {
		return c.ctx, c.deadline
	}
	// The slot's timer frees it at the deadline; close, once no write is
	// under way, frees the last slot's at once.
	deadline := now.Add(b.timeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	b.cur.Store(&boundSlot{ctx: ctx, cancel: cancel, end: now.Add(b.slot), deadline: deadline})
	return ctx, deadline
}

// close ends the current slot's context; call it once no write is under
// way. A write that starts later gets a new slot.
func (b *writeBound) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c := b.cur.Swap(nil); c != nil {
		c.cancel()
	}
}

// echoWait bounds how long a delete waits for its own notification.
const echoWait = 250 * time.Millisecond

// deleteKey deletes k's row, telling every instance. It returns once this
// store's listener applied the delete's notification (at most echoWait
// later): the other instances' listeners were signalled by the same
// commit, so the logout has most likely reached their caches too.
func (s *Store) deleteKey(ctx context.Context, k keyHash) error {
	var echo chan struct{}
	if s.cacheUsable() {
		echo = s.listener.echoes.expect(k)
		defer s.listener.echoes.forget(k, echo)
	}
	res, err := s.write(ctx, k, nil, 0, true, rowMeta{})
	// Dropped even on error: a failed delete may have committed.
	s.cache.remove(k)
	if err != nil {
		return err
	}
	s.counters.deletes.Add(res.version)
	if res.version > 0 && echo != nil {
		t := time.NewTimer(echoWait)
		defer t.Stop()
		select {
		case <-echo:
		case <-t.C:
		case <-ctx.Done():
		}
	}
	return nil
}

// refresh extends the expiry of k's row if it is still at version, no
// further than the session's absolute end. It reports whether it was, and
// the row's remaining lifetime.
func (s *Store) refresh(ctx context.Context, k keyHash, version int64, lifetime time.Duration) (bool, time.Duration, error) {
	var remainingUS int64
	err := s.pool.QueryRow(ctx, s.sql.refresh, k[:], version, lifetime.Microseconds(), s.absoluteUS()).Scan(&remainingUS)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, err
	}
	return true, time.Duration(remainingUS) * time.Microsecond, nil
}

// encode serializes the session's values, within MaxLength.
func (s *Store) encode(session *sessions.Session) ([]byte, error) {
	data, err := s.cfg.Serializer.Serialize(session.Values)
	if err != nil {
		return nil, fmt.Errorf("encode values: %w", err)
	}
	if len(data) > s.cfg.MaxLength {
		return nil, fmt.Errorf("%w: %d bytes encoded, MaxLength is %d", ErrTooLarge, len(data), s.cfg.MaxLength)
	}
	if data == nil {
		data = []byte{} // the column is NOT NULL; a custom serializer may return nil
	}
	return data, nil
}

// encodeAs encodes session's values as encode does, but returns cached,
// the session's cached data, itself when they encode to it: telling an
// unchanged session takes no allocation of its size.
func (s *Store) encodeAs(session *sessions.Session, cached []byte) ([]byte, error) {
	if _, ok := s.cfg.Serializer.(DefaultSerializer); !ok || !compactable(session.Values) || len(cached) > s.cfg.MaxLength {
		return s.encode(session)
	}
	buf := encodeBuffers.Get().(*[]byte)
	defer encodeBuffers.Put(buf)
	*buf = appendCompact((*buf)[:0], session.Values)
	if bytes.Equal(*buf, cached) {
		return cached, nil
	}
	if len(*buf) > s.cfg.MaxLength {
		return nil, fmt.Errorf("%w: %d bytes encoded, MaxLength is %d", ErrTooLarge, len(*buf), s.cfg.MaxLength)
	}
	return bytes.Clone(*buf), nil
}

// encodeBuffers are encodeAs's scratch buffers.
var encodeBuffers = sync.Pool{New: func() any { return new([]byte) }}

// newEntry is the cache entry of a row just written with lifetime, which
// the database says has remaining left, counted from now (before the
// write). It is capped when the absolute timeout held the expiry short of
// what the write asked: a refresh could not extend it.
func (s *Store) newEntry(data []byte, version int64, now time.Time, remaining, lifetime time.Duration) entry {
	e := s.cache.newEntry(data, version, now.Add(remaining), now)
	e.capped = s.cfg.AbsoluteTimeout > 0 && remaining < lifetime-s.cfg.refreshLag(lifetime)-time.Millisecond
	return e
}
