package pgsession

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/sessions"
)

// Users and devices: with Config.UserKey, each session's user is kept in
// an indexed column, so that a user's sessions can be listed and logged
// out, on every instance at once.

// SessionInfo describes one live session of a user: one device.
type SessionInfo struct {
	Handle    string    // stable, opaque, safe to show and to send back; never usable as a cookie
	User      string    // the value under Config.UserKey
	CreatedAt time.Time // when this token was issued (login renews it)
	LastSeen  time.Time // last write (or touch, with IdleTimeout) on any instance
	ExpiresAt time.Time
	ClientIP  string // with Config.RecordClient
	UserAgent string // with Config.RecordClient
}

// logoutBatch is how many sessions one statement of LogoutUser or
// LogoutOthers logs out: a user with very many sessions is logged out in
// several short transactions.
const logoutBatch = 1000

// Handle returns the handle of the session (see SessionInfo): "" for a
// session never saved. It needs no database.
func (s *Store) Handle(session *sessions.Session) string {
	if session == nil || session.ID == "" {
		return ""
	}
	t, err := parseToken(session.ID)
	if err != nil {
		return ""
	}
	return handleOf(sha256.Sum256(t[:]))
}

// handleOf is the handle of the session whose key hash is k: as handleSQL.
func handleOf(k keyHash) string {
	h := sha256.Sum256(append([]byte(handleHashPrefix), k[:]...))
	return hex.EncodeToString(h[:16])
}

// usersOn fails when Config.UserKey is not set: no session has a user.
func (s *Store) usersOn(op string) error {
	if s.cfg.UserKey == "" {
		return fmt.Errorf("%s: %w: Config.UserKey is not set, so sessions have no user", op, ErrInvalidConfig)
	}
	return nil
}

// Sessions returns the user's live sessions, newest first. Its cost
// follows the user's sessions, not the table's: it reads them through the
// index on user_id.
func (s *Store) Sessions(ctx context.Context, user string) ([]SessionInfo, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if err := s.usersOn("list sessions"); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, s.sql.sessions, user)
	if err != nil {
		s.counters.errors.Add(1)
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	defer rows.Close()
	var list []SessionInfo
	for rows.Next() {
		var si SessionInfo
		if err := rows.Scan(&si.Handle, &si.User, &si.CreatedAt, &si.LastSeen, &si.ExpiresAt, &si.ClientIP, &si.UserAgent); err != nil {
			s.counters.errors.Add(1)
			return nil, fmt.Errorf("list sessions: %w", err)
		}
		list = append(list, si)
	}
	if err := rows.Err(); err != nil {
		s.counters.errors.Add(1)
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	return list, nil
}

// Revoke logs out the user's session with the given handle, on every
// instance: its cookie is a new, empty session afterwards, and a request
// already under way with it gets ErrDeleted from Save. A handle that is
// gone already, or that is not the user's, is no error and does nothing.
// A handle that is not one (not 32 hex digits) is ErrInvalidID.
func (s *Store) Revoke(ctx context.Context, user, handle string) error {
	if b, err := hex.DecodeString(handle); err != nil || len(b) != 16 || hex.EncodeToString(b) != handle {
		return fmt.Errorf("revoke session: %w: %q is not a session handle", ErrInvalidID, handle)
	}
	_, err := s.logout(ctx, "revoke session", s.sql.revoke, user, handle)
	return err
}

// LogoutUser logs out every session of the user, on every instance, and
// returns how many. A user with very many sessions is logged out in
// batches of a thousand, each its own short transaction; when ctx ends
// (or a batch fails) it returns how many it logged out, with the error.
func (s *Store) LogoutUser(ctx context.Context, user string) (int, error) {
	return s.logout(ctx, "log out user", s.sql.logoutUser, user, nil)
}

// LogoutOthers logs out every other session of the session's user ("log
// out my other devices"), on every instance, and returns how many. The
// user is the one stored with the session; a session without one, or
// never saved, has no others.
func (s *Store) LogoutOthers(ctx context.Context, session *sessions.Session) (int, error) {
	if session == nil || session.ID == "" {
		if err := s.usersOn("log out other sessions"); err != nil {
			return 0, err
		}
		return 0, nil
	}
	t, err := parseToken(session.ID)
	if err != nil {
		return 0, fmt.Errorf("log out other sessions: %w", err)
	}
	k := sha256.Sum256(t[:])
	return s.logout(ctx, "log out other sessions", s.sql.logoutOthers, k[:], nil)
}

// logout runs the statement q, a logoutSQL, until a batch comes back
// short, dropping what it logged out from this instance's cache (the
// others hear of it from the same commit).
func (s *Store) logout(ctx context.Context, op, q string, who any, handle any) (int, error) {
	if !s.writes.enter() {
		return 0, ErrClosed
	}
	defer s.writes.leave()
	if err := s.usersOn(op); err != nil {
		return 0, err
	}
	limit := logoutBatch
	if handle != nil {
		limit = 1
	}
	total := 0
	for {
		n, err := s.logoutBatch(ctx, q, who, handle, limit)
		total += n
		s.counters.revocations.Add(int64(n))
		if err != nil {
			s.counters.errors.Add(1)
			return total, fmt.Errorf("%s: %d logged out, then: %w", op, total, explain(err))
		}
		if n < limit || handle != nil {
			return total, nil
		}
	}
}

func (s *Store) logoutBatch(ctx context.Context, q string, who, handle any, limit int) (int, error) {
	bctx, cancel := s.writeContext(ctx)
	defer cancel()
	rows, err := s.pool.Query(bctx, q, who, s.cfg.Channel, s.prefix, limit, handle)
	if err != nil {
		return 0, err
	}
	n := 0
	for rows.Next() {
		var k []byte
		if err := rows.Scan(&k); err != nil {
			rows.Close()
			return n, err
		}
		s.cache.remove(keyHash(k))
		n++
	}
	return n, rows.Err()
}

// rowMeta is what a write stores beyond data and expiry: NULL where nil.
type rowMeta struct {
	user, clientIP, userAgent *string
}

// maxUserAgent bounds the User-Agent kept with a session, in bytes.
const maxUserAgent = 512

// rowMeta returns what a write of the session for r stores beyond its
// data: its user (with UserKey) and the client (with RecordClient).
func (s *Store) rowMeta(r *http.Request, session *sessions.Session) (rowMeta, error) {
	var meta rowMeta
	if s.cfg.UserKey != "" {
		user, err := s.sessionUser(session)
		if err != nil {
			return meta, err
		}
		meta.user = user
	}
	if s.cfg.RecordClient && r != nil {
		ip := r.RemoteAddr
		if host, _, err := net.SplitHostPort(ip); err == nil {
			ip = host
		}
		if ip != "" {
			meta.clientIP = &ip
		}
		if ua := r.UserAgent(); ua != "" {
			if len(ua) > maxUserAgent {
				ua = strings.ToValidUTF8(ua[:maxUserAgent], "")
			}
			meta.userAgent = &ua
		}
	}
	return meta, nil
}

// sessionUser returns the session's user, the value under UserKey as
// text: nil when there is none.
func (s *Store) sessionUser(session *sessions.Session) (*string, error) {
	v, ok := session.Values[s.cfg.UserKey]
	if !ok || v == nil {
		return nil, nil
	}
	var u string
	switch v := v.(type) {
	case string:
		if v == "" {
			return nil, nil
		}
		u = v
	case int:
		u = strconv.FormatInt(int64(v), 10)
	case int8:
		u = strconv.FormatInt(int64(v), 10)
	case int16:
		u = strconv.FormatInt(int64(v), 10)
	case int32:
		u = strconv.FormatInt(int64(v), 10)
	case int64:
		u = strconv.FormatInt(v, 10)
	case uint:
		u = strconv.FormatUint(uint64(v), 10)
	case uint8:
		u = strconv.FormatUint(uint64(v), 10)
	case uint16:
		u = strconv.FormatUint(uint64(v), 10)
	case uint32:
		u = strconv.FormatUint(uint64(v), 10)
	case uint64:
		u = strconv.FormatUint(v, 10)
	default:
		return nil, fmt.Errorf("%w: session value %q is a %T, want a string or an integer", ErrInvalidUser, s.cfg.UserKey, v)
	}
	return &u, nil
}
