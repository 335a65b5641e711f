package pgsession

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gorilla/sessions"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The administration API: operations on sessions beyond Get and Save.

// Regenerate gives the session a new token, keeps its values, logs the old
// token out (its row becomes a tombstone until it expires, like any
// deleted session) and sets the new cookie: the old cookie is a new,
// empty session afterwards, on every instance. Call it at login (and at any
// change of privilege) against session fixation; with Config.UserKey, a
// Save that changes the user does this by itself. A session that was never
// saved is simply saved, with a token of its own. The new token's session
// begins now (CreatedAt, and the AbsoluteTimeout counted from it).
func (s *Store) Regenerate(r *http.Request, w http.ResponseWriter, session *sessions.Session) error {
	if !s.writes.enter() {
		return ErrClosed
	}
	defer s.writes.leave()
	ctx, cancel := s.writeContext(r.Context())
	defer cancel()
	if err := s.regenerate(ctx, r, w, session); err != nil {
		s.counters.errors.Add(1)
		return fmt.Errorf("regenerate session: %w", explain(err))
	}
	return nil
}

func (s *Store) regenerate(ctx context.Context, r *http.Request, w http.ResponseWriter, session *sessions.Session) error {
	opts := session.Options
	if opts == nil {
		opts = s.cfg.Cookie
	}
	meta, err := s.rowMeta(r, session)
	if err != nil {
		return err
	}
	data, err := s.encode(session)
	if err != nil {
		return err
	}
	var old *keyHash
	if session.ID != "" {
		t, err := parseToken(session.ID)
		if err != nil {
			return err
		}
		k := sha256.Sum256(t[:])
		old = &k
	}
	return s.renew(ctx, w, session, opts, data, meta, old)
}

// renew stores data under a new token and, in the same transaction, logs
// out the old one (old, nil for a session never saved), then caches the
// new one and sets its cookie. A session logged out since the request
// loaded it is ErrDeleted: its values must not live on under a new token.
func (s *Store) renew(ctx context.Context, w http.ResponseWriter, session *sessions.Session, opts *sessions.Options,
	data []byte, meta rowMeta, old *keyHash) error {
	tok, err := newToken()
	if err != nil {
		return err
	}
	k := sha256.Sum256(tok[:])
	lifetime, err := s.cfg.rowLifetime(opts.MaxAge)
	if err != nil {
		return err
	}
	now := s.now()

	var version, remainingUS int64
	rt := s.cache.begin(k)
	committing := false // the COMMIT is (about to be) sent
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if old != nil {
			var n int64
			if err := tx.QueryRow(ctx, s.sql.delete, old[:], s.cfg.Channel, s.prefix).Scan(&n); err != nil {
				return err
			}
			// Logged out since this request loaded it: the values must not
			// live on under a new token.
			var gone bool
			if err := tx.QueryRow(ctx, s.sql.tombstoned, old[:]).Scan(&gone); err != nil {
				return err
			}
			if n == 0 && gone {
				return ErrDeleted
			}
		}
		err := tx.QueryRow(ctx, s.sql.upsert, k[:], data, lifetime.Microseconds(), s.cfg.refreshLag(lifetime).Microseconds(),
			s.cfg.Channel, s.prefix, meta.user, meta.clientIP, meta.userAgent, s.absoluteUS()).Scan(&version, &remainingUS)
		committing = err == nil
		return err
	})
	if old != nil {
		s.cache.remove(*old) // also on error: the commit may have happened
	}
	if err != nil {
		s.cache.abort(k)
		// A COMMIT cut short may have gone through: the old token logged
		// out, and the new one never given to the client.
		var pgErr *pgconn.PgError
		if committing && !errors.As(err, &pgErr) {
			if ctx.Err() != nil {
				return sentUncertain(ctx)
			}
			return fmt.Errorf("%w: %w", ErrUncertain, err)
		}
		return classify(ctx, err)
	}
	s.counters.saves.Add(1)
	s.cache.add(k, s.newEntry(data, version, now, time.Duration(remainingUS)*time.Microsecond, lifetime), rt)
	session.ID = tok.String()
	return s.setCookie(w, nil, session, opts, tok, version)
}

// Len returns the number of sessions that have not expired.
func (s *Store) Len(ctx context.Context) (int64, error) {
	if s.closed.Load() {
		return 0, ErrClosed
	}
	var n int64
	if err := s.pool.QueryRow(ctx, s.sql.count).Scan(&n); err != nil {
		s.counters.errors.Add(1)
		return 0, fmt.Errorf("count sessions: %w", err)
	}
	return n, nil
}

// clearBatch is how many sessions one statement of Clear logs out: enough
// to make progress, few enough that a Save of one of them waits at most
// for one short transaction.
const clearBatch = 1000

// Clear logs out every session that exists when it is called, on every
// instance, and returns how many it logged out; sessions created meanwhile
// (logins during the Clear) stay. It works in batches of a thousand, each
// its own short transaction that tells every instance to drop its cache,
// so it never holds locks for long or stalls concurrent Saves; it skips
// rows other transactions hold and comes back for them at the end. When
// ctx ends (or a batch fails) it stops and returns how many it had logged
// out, with the error: those stay logged out everywhere. Expired rows are
// left to the purger.
func (s *Store) Clear(ctx context.Context) (int64, error) {
	if !s.writes.enter() {
		return 0, ErrClosed
	}
	defer s.writes.leave()
	var started time.Time
	if err := s.pool.QueryRow(ctx, `SELECT now()`).Scan(&started); err != nil {
		s.counters.errors.Add(1)
		return 0, fmt.Errorf("clear sessions: %w", err)
	}
	var total int64
	fail := func(err error) (int64, error) {
		s.counters.errors.Add(1)
		return total, fmt.Errorf("clear sessions: %d logged out, then: %w", total, explain(err))
	}
	// Walk the table in key order, skipping rows other transactions hold.
	after := []byte{}
	for after != nil {
		n, last, err := s.clearBatch(ctx, s.sql.clear, started, after)
		total += n
		if err != nil {
			return fail(err)
		}
		after = last
	}
	// Then what was skipped, waiting for it.
	for {
		n, _, err := s.clearBatch(ctx, s.sql.clearWait, started, []byte{})
		total += n
		if err != nil {
			return fail(err)
		}
		if n < clearBatch {
			return total, nil
		}
	}
}

// clearBatch logs out one batch with the statement q: the live sessions
// created up to started, in the window of keys after after. It returns how
// many it logged out and the window's last key (nil at the end).
func (s *Store) clearBatch(ctx context.Context, q string, started time.Time, after []byte) (int64, []byte, error) {
	bctx, cancel := s.writeContext(ctx)
	defer cancel()
	var n, notified int64
	var last []byte
	err := s.pool.QueryRow(bctx, q, clearBatch, s.cfg.Channel, s.prefix+clearItem, started, after).Scan(&n, &last, &notified)
	if n > 0 || err != nil {
		s.cache.drop() // also on error: the commit may have happened
	}
	return n, last, classify(bctx, err)
}

// Delete deletes the session whose session.ID is token, on every instance:
// "log this session out" for admin tools. Deleting a session that does not
// exist is not an error. A token this store could not have issued is
// ErrInvalidID.
func (s *Store) Delete(ctx context.Context, token string) error {
	if !s.writes.enter() {
		return ErrClosed
	}
	defer s.writes.leave()
	t, err := parseToken(token)
	if err == nil {
		err = s.deleteKey(ctx, sha256.Sum256(t[:]))
	}
	if err != nil {
		s.counters.errors.Add(1)
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}
