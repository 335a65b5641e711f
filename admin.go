package pgsession

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"

	"github.com/gorilla/sessions"
	"github.com/jackc/pgx/v5"
)

// The administration API: operations on sessions beyond Get and Save.

// Regenerate gives the session a new token, keeps its values, logs the old
// token out (its row becomes a tombstone until it expires, like any
// deleted session) and sets the new cookie: the old cookie is a new,
// empty session afterwards, on every instance. Call it at login (and at any
// change of privilege) against session fixation. A session that was never
// saved is simply saved, with a token of its own.
func (s *Store) Regenerate(r *http.Request, w http.ResponseWriter, session *sessions.Session) error {
	if !s.writes.enter() {
		return ErrClosed
	}
	defer s.writes.leave()
	if err := s.regenerate(r.Context(), w, session); err != nil {
		s.counters.errors.Add(1)
		return fmt.Errorf("regenerate session: %w", explain(err))
	}
	return nil
}

func (s *Store) regenerate(ctx context.Context, w http.ResponseWriter, session *sessions.Session) error {
	opts := session.Options
	if opts == nil {
		opts = s.cfg.Cookie
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

	var version int64
	rt := s.cache.begin(k)
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
		return tx.QueryRow(ctx, s.sql.upsert, k[:], data, lifetime.Microseconds(), s.cfg.Channel, s.prefix).Scan(&version)
	})
	if old != nil {
		s.cache.remove(*old) // also on error: the commit may have happened
	}
	if err != nil {
		s.cache.abort(k)
		return err
	}
	s.counters.saves.Add(1)
	e := newEntry(data, version, now.Add(lifetime), now)
	s.cache.add(k, e, rt)
	session.ID = tok.String()
	return s.setCookie(w, session, opts, tok, version, e)
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

// Clear deletes every session in the table, and every instance drops its
// whole cache.
func (s *Store) Clear(ctx context.Context) error {
	if !s.writes.enter() {
		return ErrClosed
	}
	defer s.writes.leave()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, s.sql.clear); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, s.cfg.Channel, s.prefix+clearItem)
		return err
	})
	s.cache.drop() // also on error: the commit may have happened
	if err != nil {
		s.counters.errors.Add(1)
		return fmt.Errorf("clear sessions: %w", explain(err))
	}
	return nil
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
