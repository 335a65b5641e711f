package pgsession

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Sentinel errors. Errors returned by the store wrap one of these where the
// cause is the store's own; test for them with errors.Is.
//
// Messages follow one rule: an operation names itself once, in front of its
// cause ("save session: ...", "load session: ...", "delete session: ...",
// "regenerate session: ...", "clear sessions: ..."), and a cause is added by
// the layer that knows it ("refresh expiry: ...", a pgx error, or one of
// these sentinels, which carry the package name).
var (
	// ErrClosed is returned by every operation on a Store after Close.
	ErrClosed = errors.New("pgsession: store closed")

	// ErrTooLarge is returned by Save when the encoded session is longer than
	// Config.MaxLength. Nothing is written and the stored session is unchanged.
	ErrTooLarge = errors.New("pgsession: session too large")

	// ErrInvalidConfig is wrapped by New when the configuration cannot work,
	// and by Save and Regenerate for a session whose Options.MaxAge
	// overflows.
	ErrInvalidConfig = errors.New("pgsession: invalid config")

	// ErrInvalidID is returned by Save and Regenerate when session.ID was
	// changed to something this store did not issue, and by Delete for a
	// token this store could not have issued.
	ErrInvalidID = errors.New("pgsession: invalid session id")

	// ErrDeleted is returned by Save when the session was deleted (logged
	// out, here or on another instance) after this request loaded it.
	// Nothing is written: a logout is never undone by a request that was
	// already under way. The session stays deleted.
	ErrDeleted = errors.New("pgsession: session was deleted")

	// ErrNotHeard is wrapped by New when the store's listener cannot hear
	// the notifications the store sends through its pool, so its cache
	// could never be kept coherent. The message names the likely causes.
	ErrNotHeard = errors.New("pgsession: listener does not hear the store's notifications")

	// ErrUncertain is wrapped, with the context's error, by a write whose
	// context ended after the write was sent to PostgreSQL: it may or may
	// not have committed, and nobody can tell which until the session is
	// read again. The store drops its cached copy and sets no cookie; the
	// client keeps its previous cookie, which reads whichever version is
	// stored. A write whose context ended before it was sent returns the
	// context's error without ErrUncertain: nothing was written.
	ErrUncertain = errors.New("pgsession: the write was sent and may have committed")

	// ErrNotifyQueueFull is wrapped by writes that failed because the
	// cluster's notification queue is full (SQLSTATE 54000): some session
	// that LISTENs, in any database of the cluster, is not consuming
	// notifications, usually because it sits idle in a transaction. Every
	// write that notifies fails until that session moves on and the queue is
	// cleaned up; nothing was written. Stats.NotifyQueueUsage shows the fill
	// level before it comes to this.
	ErrNotifyQueueFull = errors.New("pgsession: the cluster's notification queue is full")

	// ErrInvalidUser is returned by Save and Regenerate when the session
	// value under Config.UserKey is neither a string nor an integer.
	// Nothing is written.
	ErrInvalidUser = errors.New("pgsession: invalid user value")

	// ErrCorrupt is wrapped by Get when stored session data cannot be
	// decoded, whatever the Serializer.
	ErrCorrupt = errors.New("pgsession: corrupt session data")
)

// explain adds what to look for to an error PostgreSQL gives for a write
// when the cluster's notification queue is full.
func explain(err error) error {
	if err == nil {
		return nil // before errors.As, whose target escapes
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "54000" && strings.Contains(strings.ToLower(pgErr.Message), "notif") {
		return fmt.Errorf("%w: nothing was written; look for a session that LISTENs and is idle in a transaction "+
			"(SELECT pid, datname, state, xact_start FROM pg_stat_activity WHERE state LIKE 'idle in transaction%%'): %w",
			ErrNotifyQueueFull, err)
	}
	return err
}
