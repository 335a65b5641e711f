package pgsession

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// The write path below Save and the admin API: every write of a session
// goes through write, alone or group-committed (see batch.go).

// write commits a write (or, with del, a delete) of k, batched with
// concurrent ones unless batching is off. For a delete, version is 1 if a
// row was deleted. superseded reports that a later write of k in the same
// batch won, so this one's data is not what is stored.
func (s *Store) write(ctx context.Context, k keyHash, data []byte, lifetime time.Duration, del bool) (version int64, superseded bool, err error) {
	op := &writeOp{key: k, data: data, lifetimeUS: lifetime.Microseconds(), del: del}
	if s.commits == nil {
		s.commitOne(ctx, op)
	} else {
		s.commits.write(ctx, op)
	}
	return op.version, op.superseded, explain(op.err)
}

// commitOne writes op in a statement of its own.
func (s *Store) commitOne(ctx context.Context, op *writeOp) {
	if op.del {
		op.err = s.pool.QueryRow(ctx, s.sql.delete, op.key[:], s.cfg.Channel, s.prefix).Scan(&op.version)
	} else {
		op.err = s.pool.QueryRow(ctx, s.sql.upsert, op.key[:], op.data, op.lifetimeUS, s.cfg.Channel, s.prefix).Scan(&op.version)
		if errors.Is(op.err, pgx.ErrNoRows) {
			op.err = ErrDeleted // the upsert met a tombstone
		}
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
	n, _, err := s.write(ctx, k, nil, 0, true)
	// Dropped even on error: a failed delete may have committed.
	s.cache.remove(k)
	if err != nil {
		return err
	}
	s.counters.deletes.Add(n)
	if n > 0 && echo != nil {
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

// refresh extends the expiry of k's row if it is still at version. It
// reports whether it was.
func (s *Store) refresh(ctx context.Context, k keyHash, version int64, lifetime time.Duration) (bool, error) {
	tag, err := s.pool.Exec(ctx, s.sql.refresh, k[:], version, lifetime.Microseconds())
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}
