package pgsession

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// The store's SQL: every statement it runs on the session table, and the
// table's DDL. Names are quoted with pgx.Identifier; values always go as
// parameters.

// queries are the store's SQL statements, with the table name in place.
type queries struct {
	table        string // quoted, schema-qualified table name
	load         string
	upsert       string // waits for a row locked elsewhere
	upsertNoWait string // fails with lock_not_available instead of waiting (see noWait)
	upsertSkip   string // reports a row locked elsewhere instead of waiting
	refresh      string
	delete       string // waits for a row locked elsewhere
	deleteNoWait string // fails with lock_not_available instead of waiting (see noWait)
	deleteSkip   string // reports a row locked elsewhere instead of waiting
	batch        string // skips rows locked elsewhere
	tombstoned   string
	purge        string
	count        string
	clear        string // one bounded batch
	clearWait    string

	sessions     string // a user's live sessions
	revoke       string // one session of a user, by handle
	logoutUser   string // every session of a user, a bounded batch
	logoutOthers string // a session's user's other sessions, a bounded batch
	touch        string // extends the expiry of sessions read (IdleTimeout)
}

// storeWrite marks a statement as the store's own. The table's triggers
// notify only changes made by other SQL (an admin's DELETE, a migration's
// UPDATE): the store's statements notify for themselves, with versions, or
// need no notification (an expiry-only refresh, a purge of expired rows).
// Every statement of the store that writes has it in a WHERE clause (an
// upsert in its INSERT's, so that even a plain insert, which fires the
// UPDATE statement trigger too, skips the trigger's function): an
// uncorrelated subquery, evaluated before the first row changes, whose
// setting ends with the transaction.
const storeWrite = `(SELECT set_config('pgsession.store_write', 'on', true)) = 'on'`

// noWait keeps a statement from waiting long for a lock held elsewhere:
// it sets lock_timeout to lockNoWait for the rest of the statement's own
// transaction (an implicit one: it needs no session-level SET, and works
// through PgBouncer in transaction pooling mode). Like storeWrite, it goes
// in a WHERE clause as an uncorrelated subquery, evaluated before the
// first row is read, locked or written: a lock wait of the statement after
// that (a row another transaction updates or locks, a key it inserted and
// has not committed) lasts at most lockNoWait, then the statement fails as
// a whole with SQLSTATE 55P03, lock_not_available, having written and
// notified nothing (isLockTimeout). When no lock is held, as nearly
// always, it costs next to nothing, where looking for a lock first
// (lockOrSkip) costs two scans, and a row lock and its WAL record more.
// Locks a statement takes before it runs (the table's, while it is
// planned) wait as any statement's do.
//
// The commit of a transaction that notified waits for a lock every
// notifying commit of the cluster takes in turn (PreCommit_Notify's, on
// "database 0"): lock_timeout must not cut that wait short, so a
// statement with noWait resets the setting once its row is written
// (lockRestore, in its notification's payload).
const noWait = `(SELECT set_config('lock_timeout', '` + lockNoWait + `', true)) IS NOT NULL`

// storeWriteNoWait is storeWrite and noWait in one subquery: a statement
// evaluates one InitPlan where two cost a single write about 6 µs more.
const storeWriteNoWait = `(SELECT set_config('lock_timeout', '` + lockNoWait + `', true) IS NOT NULL
	AND set_config('pgsession.store_write', 'on', true) = 'on')`

// lockRestore resets lock_timeout, for the rest of the transaction, to the
// session's default (a NULL value is RESET: the server's, database's or
// role's setting, or the connection's startup parameter; a session-level
// SET is not restored). It is an empty string, appended to a
// notification's payload, which is computed once the row is written.
const lockRestore = `coalesce(left(set_config('lock_timeout', NULL, true), 0), '')`

// lockNoWait is the lock_timeout of a statement with noWait: a row held
// for less is waited for, as the retry would wait that long anyway
// (lockPollMin).
const lockNoWait = "5ms"

// writeShape is what a store's writes store beyond data and expiry,
// chosen by its Config: the statements differ only in what an update of an
// existing row sets and checks.
type writeShape struct {
	users  bool // Config.UserKey: user_id is written, and a change of it is refused (userChanged)
	client bool // Config.RecordClient: client_ip and user_agent are written
	abs    bool // Config.AbsoluteTimeout: an expired row is not written again (ErrDeleted)
	quiet  bool // CoherenceRevocations: upserts send no notification; deletes still do
}

// userChanged is the version a write returns when it was refused because
// the row is live with another user (Config.UserKey): the caller renews
// the token instead (see Store.save).
const userChanged = -2

// onConflict is the conflict rule of every upsert, single or batched (the
// target table is aliased s): a write replaces data and expiry and bumps
// the version, unless the row is a tombstone that has not expired yet, in
// which case nothing is written and no row is returned (ErrDeleted). With
// users, a write that would change the row's user is refused too: login
// renews the token (see Store.save). A row reused after it expired starts
// a new session: created_at restarts. The expiry written is expiry, an
// expression of the existing row s and of excluded. It does not mark the
// write (storeWrite): the INSERT's own WHERE has, before any row, and a
// second set_config in the conflict rule cost every update about 13 µs.
func onConflict(f writeShape, expiry string) string {
	set := `data = excluded.data, expires_at = ` + expiry + `,
		version = s.version + 1, updated_at = now(), deleted = false, last_seen = now(),
		created_at = CASE WHEN s.deleted OR s.expires_at <= now() THEN now() ELSE s.created_at END`
	cond := `(NOT s.deleted OR s.expires_at <= now())`
	if f.abs {
		// A request that loaded the session before its end must not
		// start it again under the same token.
		cond = `NOT s.deleted AND s.expires_at > now()`
	}
	if f.users {
		set += `, user_id = excluded.user_id`
		cond += ` AND s.user_id IS NOT DISTINCT FROM excluded.user_id`
	}
	if f.client {
		set += `, client_ip = excluded.client_ip, user_agent = excluded.user_agent`
	}
	return `ON CONFLICT (key_hash) DO UPDATE
	SET ` + set + `
	WHERE ` + cond
}

// refusedForUser selects, for the keys matching where that were not
// written (none of them in w), those whose row is not a live tombstone
// (with abs: those whose row is live): with users, the write met the row
// live with another user.
func refusedForUser(t, where string, f writeShape) string {
	live := `NOT (deleted AND expires_at > now())`
	if f.abs {
		live = `NOT deleted AND expires_at > now()`
	}
	return `SELECT key_hash FROM ` + t + ` WHERE ` + where + ` AND key_hash NOT IN (SELECT key_hash FROM w)
			AND ` + live
}

func newQueries(schema, table string, f writeShape) queries {
	t := pgx.Identifier{table}.Sanitize()
	if schema != "" {
		t = pgx.Identifier{schema, table}.Sanitize()
	}
	return queries{
		table: t,
		// Tombstones too: a logged-out session is remembered as dead, so
		// that replaying its cookie costs no query per request.
		load: `SELECT data, version, expires_at, now(), deleted FROM ` + t +
			` WHERE key_hash = $1 AND expires_at > now()`,
		// The notification goes in the same statement, so in the same
		// transaction: it is delivered if and only if the write commits.
		// Parameters: key, data, lifetime and refresh lag (microseconds),
		// channel, payload prefix, user, client IP, user agent, absolute
		// timeout (microseconds, NULL for none). It returns the version and
		// the row's remaining lifetime; no row when it met a tombstone,
		// version userChanged when it met the row live with another user.
		upsert: upsertSQL(t, true, f),
		// The same, failing instead of waiting for a lock (noWait): the
		// first try of every write, cheap when no lock is held.
		upsertNoWait: upsertSQL(t, false, f),
		// The same, unless another transaction holds the row: then it
		// returns version -1 and writes nothing. The retries of a write
		// that met a held row (Store.finish) poll with it, so that a row
		// held for long costs no error, in the server's log, per try; a
		// key another transaction inserted and has not committed, which
		// SKIP LOCKED cannot see, still fails it on the lock timeout.
		upsertSkip: `WITH ` + lockOrSkip(t, `key_hash = $1`) + `,
			w AS (` + upsertRow(t, `NOT EXISTS (SELECT FROM busy)`, storeWriteNoWait, f) + `)
			SELECT w.version, w.remaining FROM w, ` + upsertNotify(f, true) + `
			UNION ALL SELECT -1, 0 FROM busy` +
			ifUsers(f, `
			UNION ALL SELECT `+fmt.Sprint(userChanged)+`, 0 FROM (`+refusedForUser(t, `key_hash = $1 AND NOT EXISTS (SELECT FROM busy)`, f)+`) r`),
		// Parameters: key, version, lifetime and absolute timeout
		// (microseconds; NULL for none). It returns the remaining lifetime.
		refresh: `UPDATE ` + t + ` AS s SET expires_at = ` + newExpiry(`now() + $3::bigint * interval '1 microsecond'`, `s.created_at`, `$4::bigint`) + `,
				last_seen = now()
			WHERE key_hash = $1 AND version = $2 AND expires_at > now() AND NOT deleted AND ` + storeWrite + `
			RETURNING ` + remainingUS,
		// A delete leaves a tombstone (see schema.sql); purge removes it
		// once it expires.
		delete: `WITH d AS (` + tombstone(t, `key_hash = $1`, storeWrite) + `)
			SELECT count(*) FROM d, pg_notify($2, $3 || encode(d.key_hash, 'hex') || ':0')`,
		// The same, failing instead of waiting for a lock (noWait).
		deleteNoWait: `WITH d AS (` + tombstone(t, `key_hash = $1`, storeWriteNoWait) + `)
			SELECT count(*) FROM d, pg_notify($2, $3 || encode(d.key_hash, 'hex') || ':0' || ` + lockRestore + `)`,
		// The same, unless another transaction holds the row: then -1.
		deleteSkip: `WITH ` + lockOrSkip(t, `key_hash = $1`) + `,
			d AS (` + tombstone(t, `key_hash IN (SELECT key_hash FROM lk)`, storeWrite) + `)
			SELECT CASE WHEN EXISTS (SELECT FROM busy) THEN -1 ELSE
				(SELECT count(*) FROM d, pg_notify($2, $3 || encode(d.key_hash, 'hex') || ':0')) END`,
		batch: batchSQL(t, f),
		tombstoned: `SELECT EXISTS (SELECT FROM ` + t +
			` WHERE key_hash = $1 AND deleted AND expires_at > now())`,
		// SKIP LOCKED: rows a concurrent writer or purger holds are left
		// for the next batch instead of waited for.
		purge: `DELETE FROM ` + t + ` WHERE key_hash IN (
				SELECT key_hash FROM ` + t + ` WHERE expires_at <= now()
				LIMIT $1 FOR UPDATE SKIP LOCKED) AND ` + storeWrite,
		count: `SELECT count(*) FROM ` + t + ` WHERE expires_at > now() AND NOT deleted`,
		// Up to $1 live sessions become tombstones, so that requests under
		// way cannot bring back what Clear removed, and every instance
		// drops its cache ($2 channel, $3 payload). clear skips rows other
		// transactions hold; clearWait, for what is left, waits for them.
		clear:     clearSQL(t, false),
		clearWait: clearSQL(t, true),

		// Through the partial index on user_id: an index scan of the
		// user's rows, never of the table.
		sessions: `SELECT ` + handleSQL + `, user_id, created_at, coalesce(last_seen, updated_at), expires_at,
				coalesce(client_ip, ''), coalesce(user_agent, '')
			FROM ` + t + ` WHERE user_id = $1 AND NOT deleted AND expires_at > now()
			ORDER BY created_at DESC, key_hash`,
		// Parameters: keys, idle and absolute timeouts (microseconds; NULL
		// for none). Rows a writer holds are skipped, not waited for: the
		// write sets their expiry itself. No notification, no new version:
		// nothing any instance caches changes but the expiry, which it
		// reads again when its own deadline passes. It never shortens.
		touch: `UPDATE ` + t + ` AS s SET expires_at = GREATEST(s.expires_at, ` +
			newExpiry(`now() + $2::bigint * interval '1 microsecond'`, `s.created_at`, `$3::bigint`) + `),
				last_seen = now()
			WHERE s.key_hash IN (SELECT key_hash FROM ` + t + ` WHERE key_hash = ANY($1::bytea[])
				AND NOT deleted AND expires_at > now() ORDER BY key_hash FOR UPDATE SKIP LOCKED) AND ` + storeWrite + `
			RETURNING s.key_hash, s.version, ` + remainingUS,
		revoke:       logoutSQL(t, `$1::text`, handleSQL+` = $5::text AND $4::int > 0`),
		logoutUser:   logoutSQL(t, `$1::text`, `$5::text IS NULL`),
		logoutOthers: logoutSQL(t, `(SELECT user_id FROM `+t+` WHERE key_hash = $1::bytea AND NOT deleted AND expires_at > now())`, `key_hash <> $1::bytea AND $5::text IS NULL`),
	}
}

// handleHashPrefix is hashed before a session's key hash to make its
// handle: Store.Handle computes the same in Go.
const handleHashPrefix = "pgsession handle"

// handleSQL is a row's handle: the first 16 bytes of the SHA-256 of
// handleHashPrefix and the key hash, in hex. The key hash cannot be found
// from it, nor the token from the key hash.
const handleSQL = `encode(substring(sha256('` + handleHashPrefix + `'::bytea || key_hash) FROM 1 FOR 16), 'hex')`

// logoutSQL tombstones up to $4 live sessions of the user (an expression,
// so that it may come from a row) that also match where, and notifies
// every instance of them ($2 channel, $3 payload prefix), at most
// notifyItemsPerPayload keys per payload, all in one statement. It returns
// the key hashes it tombstoned.
func logoutSQL(t, user, where string) string {
	return `WITH d AS (` + tombstone(t, `key_hash IN (
				SELECT key_hash FROM `+t+` WHERE user_id = `+user+` AND NOT deleted AND expires_at > now() AND `+where+`
				LIMIT $4 FOR UPDATE)`, storeWrite) + `),
		n AS (
			SELECT pg_notify($2, $3 || string_agg(encode(key_hash, 'hex') || ':0', ' '))
			FROM (SELECT key_hash, (row_number() OVER () - 1) / ` + fmt.Sprint(notifyItemsPerPayload) + ` AS chunk FROM d) x
			GROUP BY chunk)
		SELECT d.key_hash FROM d, (SELECT count(*) FROM n) c`
}

// upsertSQL is the upsert of one session, with its notification; with
// wait false, it fails instead of waiting for a lock (noWait). It returns
// the version and the row's remaining lifetime; no row when it met a
// tombstone, version userChanged when it met the row live with another
// user.
func upsertSQL(t string, wait bool, f writeShape) string {
	mark := storeWrite
	if !wait {
		mark = storeWriteNoWait
	}
	return `WITH w AS (` + upsertRow(t, `true`, mark, f) + `)
			SELECT w.version, w.remaining FROM w, ` + upsertNotify(f, !wait) +
		ifUsers(f, `
			UNION ALL SELECT `+fmt.Sprint(userChanged)+`, 0 FROM (`+refusedForUser(t, `key_hash = $1`, f)+`) r`)
}

// upsertNotify is the notification of a single upsert ($5 channel, $6
// payload prefix), joined to its row w; with restore, of a statement with
// noWait (see lockRestore). Quiet (CoherenceRevocations), it sends none,
// and so needs no restore: other instances learn of the new version from
// the client's cookie, or re-read their copy after MaxStale. $5 and $6
// are then still referenced, so that every shape takes the same
// parameters (PostgreSQL cannot type a parameter that no statement uses).
func upsertNotify(f writeShape, restore bool) string {
	if f.quiet {
		return `(SELECT $5::text, $6::text) quiet`
	}
	payload := `$6 || encode($1::bytea, 'hex') || ':' || w.version`
	if restore {
		payload += ` || ` + lockRestore
	}
	return `pg_notify($5, ` + payload + `)`
}

// ifUsers is sql with users, else nothing.
func ifUsers(f writeShape, sql string) string {
	if f.users {
		return sql
	}
	return ""
}

// upsertRow is the INSERT ... ON CONFLICT of one session ($1 key, $2 data,
// $3 lifetime and $4 refresh lag in microseconds, $7 user, $8 client IP,
// $9 user agent, $10 absolute timeout in microseconds or NULL), done only
// when cond holds, marked by mark (storeWrite or storeWriteNoWait). It
// keeps the row's expiry when that is at most the refresh lag before the
// new one: expires_at is indexed, so an update that leaves it alone can be
// a HOT update, touching neither the index nor a new page. No expiry
// passes the session's start plus the absolute timeout. It returns the
// version and the row's remaining lifetime in microseconds.
//
// The expiry of an existing row is computed in the conflict rule, from
// the row it locked (the newest version, where a read of the row before
// the INSERT would see the statement's snapshot), so the statement reads
// the row once: a live row keeps its expiry and start, a tombstone or an
// expired row being reused starts a new session, as a new row does.
func upsertRow(t, cond, mark string, f writeShape) string {
	next := newExpiry(`now() + $3::bigint * interval '1 microsecond'`, `s.created_at`, `$10::bigint`)
	expiry := `CASE WHEN s.deleted OR s.expires_at <= now() THEN excluded.expires_at
		ELSE ` + keptExpiry(`s.expires_at`, next, `$4::bigint`) + ` END`
	return `INSERT INTO ` + t + ` AS s (key_hash, data, expires_at, user_id, client_ip, user_agent, last_seen)
		SELECT $1::bytea, $2::bytea, ` + newExpiry(`now() + $3::bigint * interval '1 microsecond'`, `NULL`, `$10::bigint`) + `,
			$7::text, $8::text, $9::text, now()
		WHERE ` + cond + ` AND ` + mark + `
		` + onConflict(f, expiry) + `
		RETURNING s.version, ` + remainingUS + ` AS remaining`
}

// newExpiry is the expiry a write sets: next, but no later than the
// session's start (created, NULL for a new session: now) plus the absolute
// timeout absUS (microseconds; NULL for none, which LEAST ignores).
func newExpiry(next, created, absUS string) string {
	return `LEAST(` + next + `, coalesce(` + created + `, now()) + ` + absUS + ` * interval '1 microsecond')`
}

// keptExpiry chooses the expiry a write stores: the current one (cur, NULL
// for a new row) when it lies within lagUS microseconds before the new one
// (next), else the new one.
func keptExpiry(cur, next, lagUS string) string {
	return `CASE WHEN ` + cur + ` <= ` + next + ` AND ` + cur + ` >= ` + next + ` - ` + lagUS + ` * interval '1 microsecond'
		THEN ` + cur + ` ELSE ` + next + ` END`
}

// remainingUS is a written row's remaining lifetime, in microseconds on
// the database clock.
const remainingUS = `(extract(epoch FROM s.expires_at - now()) * 1000000)::bigint`

// lockOrSkip are the CTEs lk, the rows matching where that this
// transaction could lock, and busy, those another transaction holds.
func lockOrSkip(t, where string) string {
	return `lk AS (SELECT key_hash FROM ` + t + ` WHERE ` + where + ` FOR UPDATE SKIP LOCKED),
		busy AS (SELECT key_hash FROM ` + t + ` WHERE ` + where + ` AND key_hash NOT IN (SELECT key_hash FROM lk))`
}

// clearSQL tombstones one batch of the live sessions created up to $4
// ($1 sessions at most; $2 channel and $3 payload of the notification that
// makes every instance drop its cache). The first pass walks the primary
// key in windows of $1 keys after $5, so that each batch reads only its
// own window, and skips rows other transactions hold; it returns the
// window's last key, NULL at the end. The second pass (wait) takes what is
// left, waiting for the locks.
func clearSQL(t string, wait bool) string {
	pick := `SELECT key_hash FROM ` + t + ` WHERE key_hash IN (SELECT key_hash FROM k)
				AND NOT deleted AND expires_at > now() AND created_at <= $4 FOR UPDATE SKIP LOCKED`
	window := `SELECT key_hash FROM ` + t + ` WHERE key_hash > $5 ORDER BY key_hash LIMIT $1`
	if wait {
		pick = `SELECT key_hash FROM ` + t + ` WHERE NOT deleted AND expires_at > now() AND created_at <= $4
				AND $5::bytea IS NOT NULL LIMIT $1 FOR UPDATE`
		window = `SELECT NULL::bytea AS key_hash`
	}
	return `WITH k AS (` + window + `),
		c AS (
			UPDATE ` + t + ` SET ` + tombstoneSet + `
			WHERE key_hash IN (` + pick + `) AND ` + storeWrite + `
			RETURNING 1),
		n AS (SELECT count(*) AS n FROM c)
		SELECT n.n, (SELECT key_hash FROM k ORDER BY key_hash DESC LIMIT 1),
			(SELECT count(*) FROM (SELECT pg_notify($2, $3)) p WHERE n.n > 0) FROM n`
}

// tombstoneSet empties a row and marks it deleted: the tombstone keeps
// neither the data nor the user nor the client's IP and User-Agent.
const tombstoneSet = `deleted = true, data = '\x', version = version + 1, updated_at = now(),
		user_id = NULL, client_ip = NULL, user_agent = NULL`

// tombstone is the statement that deletes the sessions matching where: it
// empties their rows and marks them deleted until they expire. mark is
// storeWrite, or storeWriteNoWait.
func tombstone(t, where, mark string) string {
	return `UPDATE ` + t + ` SET ` + tombstoneSet + `
		WHERE ` + where + ` AND NOT deleted AND ` + mark + ` RETURNING key_hash`
}

// batchSQL writes many sessions in one statement: a multi-row upsert ($1
// keys, $2 data, $3 lifetimes, $4 refresh lags, $8 users, $9 client IPs,
// $10 user agents, $11 the absolute timeout or NULL), a multi-row delete
// ($5 keys), and one notification per notifyItemsPerPayload sessions ($6
// channel, $7 prefix), all in the statement's one transaction. Rows that
// another transaction holds are skipped, not waited for, so that one
// locked session cannot stall the others' writes; a key another
// transaction inserted and has not committed, which SKIP LOCKED cannot
// see, fails the statement on its lock timeout (noWait), having written
// nothing, and the batch is retried write by write. It returns per key the
// version written and the remaining lifetime; version 0 for a delete, -1
// for a skipped row and userChanged for a row live with another user. A
// key with no row was an upsert that met a tombstone, or a delete of
// nothing. Quiet (CoherenceRevocations), only the deletes are notified.
func batchSQL(t string, f writeShape) string {
	next := newExpiry(`now() + u.us * interval '1 microsecond'`, `o.created_at`, `$11::bigint`)
	notified := `a`
	if f.quiet {
		notified = `(SELECT key_hash, 0 AS version FROM ts) d`
	}
	return `WITH u AS (
			SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bigint[], $4::bigint[], $8::text[], $9::text[], $10::text[])
				AS u(key_hash, data, us, lag, user_id, client_ip, user_agent)),
		` + lockOrSkip(t, `key_hash = ANY($1::bytea[] || $5::bytea[])`) + `,
		w AS (
			INSERT INTO ` + t + ` AS s (key_hash, data, expires_at, user_id, client_ip, user_agent, last_seen)
			SELECT u.key_hash, u.data, ` + keptExpiry(`o.expires_at`, next, `u.lag`) + `, u.user_id, u.client_ip, u.user_agent, now()
			FROM u LEFT JOIN ` + t + ` o ON o.key_hash = u.key_hash AND NOT o.deleted AND o.expires_at > now()
			WHERE u.key_hash NOT IN (SELECT key_hash FROM busy) AND ` + storeWriteNoWait + `
			` + onConflict(f, `excluded.expires_at`) + `
			RETURNING s.key_hash, s.version, ` + remainingUS + ` AS remaining),
		ts AS (` + tombstone(t, `key_hash = ANY($5::bytea[]) AND key_hash IN (SELECT key_hash FROM lk)`, storeWrite) + `),
		a AS (
			SELECT key_hash, version, remaining FROM w
			UNION ALL SELECT key_hash, 0, 0 FROM ts),
		n AS (
			SELECT pg_notify($6, $7 || string_agg(encode(key_hash, 'hex') || ':' || version, ' ') || ` + lockRestore + `)
			FROM (SELECT key_hash, version, (row_number() OVER () - 1) / ` + fmt.Sprint(notifyItemsPerPayload) + ` AS chunk FROM ` + notified + `) x
			GROUP BY chunk)
		SELECT a.key_hash, a.version, a.remaining FROM a, (SELECT count(*) FROM n) c
		UNION ALL SELECT key_hash, -1, 0 FROM busy` + ifUsers(f, `
		UNION ALL SELECT key_hash, `+fmt.Sprint(userChanged)+`, 0 FROM (`+
		refusedForUser(t, `key_hash = ANY($1::bytea[]) AND key_hash NOT IN (SELECT key_hash FROM busy)`, f)+`) r`)
}

// The table's DDL is built here from quoted names and quoted literals: a
// configured name is never substituted into SQL text, so it can never land
// in a comment, and the comments are constants. schema.sql and upgrade.sql
// are this DDL for the default names; TestSchemaFiles keeps them equal.

// triggerOrigin is the origin of the notifications the table's triggers
// send. No Store has it (a Store's origin is 16 hex digits), so every
// Store applies them.
const triggerOrigin = "sql"

// triggerClearRows is the most rows one statement of other SQL may change
// and still have their keys notified; a statement that changes more (and
// any TRUNCATE) notifies the clear item: every instance drops its cache.
const triggerClearRows = 1000

// indexSuffix and functionSuffix name the table's index and trigger
// function after the table.
const (
	indexSuffix     = "_expires_at_idx"
	userIndexSuffix = "_user_id_idx"
	functionSuffix  = "_notify"
)

// notifyTrigger is one of the table's statement-level triggers. Each has
// its own (a trigger with a transition table fires on one event only).
type notifyTrigger struct {
	suffix      string // the trigger's name is the table's plus this
	event       string
	referencing string // transition table clause
}

// notifyTriggers are the triggers that notify changes made by other SQL.
// An UPDATE needs only the old rows: a key that did not exist before the
// statement cannot be cached anywhere.
var notifyTriggers = [...]notifyTrigger{
	{"_notify_update", "UPDATE", "REFERENCING OLD TABLE AS old_rows"},
	{"_notify_delete", "DELETE", "REFERENCING OLD TABLE AS old_rows"},
	{"_notify_truncate", "TRUNCATE", ""},
}

// objectName is the name of the table's object with the given suffix:
// table+suffix when that fits in an identifier, else a prefix of table
// (cut on a character boundary), "_", 8 hex digits of table's SHA-256,
// and suffix. PostgreSQL would instead truncate table+suffix, which for a
// 63-byte table gives the table's own name (CREATE INDEX IF NOT EXISTS
// then skipped the index) and gives two triggers one name.
func objectName(table, suffix string) string {
	if len(table)+len(suffix) <= maxIdentifierLen {
		return table + suffix
	}
	sum := sha256.Sum256([]byte(table))
	tag := "_" + hex.EncodeToString(sum[:4])
	n := maxIdentifierLen - len(tag) - len(suffix)
	for n > 0 && !utf8.RuneStart(table[n]) {
		n--
	}
	return table[:n] + tag + suffix
}

// ddlNames are the quoted names and literals the DDL of one table uses.
type ddlNames struct {
	raw       string // the table's name, unquoted
	table     string // quoted, schema-qualified if the schema is known
	index     string // quoted; an index always goes in its table's schema
	userIndex string // quoted, like index
	function  string // quoted, qualified like table
	channel   string // the trigger argument, as a string literal
}

func newDDLNames(schema, table, channel string) ddlNames {
	qualify := func(name string) string {
		if schema == "" {
			return pgx.Identifier{name}.Sanitize()
		}
		return pgx.Identifier{schema, name}.Sanitize()
	}
	return ddlNames{
		raw:       table,
		table:     qualify(table),
		index:     pgx.Identifier{objectName(table, indexSuffix)}.Sanitize(),
		userIndex: pgx.Identifier{objectName(table, userIndexSuffix)}.Sanitize(),
		function:  qualify(objectName(table, functionSuffix)),
		channel:   quoteLiteral(channel),
	}
}

// trigger returns the quoted name of the table's trigger tr.
func (n ddlNames) trigger(tr notifyTrigger) string {
	return pgx.Identifier{objectName(n.raw, tr.suffix)}.Sanitize()
}

// quoteLiteral quotes s as an SQL string literal; one with a backslash
// gets the escape-string form, which means the same whatever
// standard_conforming_strings says.
func quoteLiteral(s string) string {
	if !strings.ContainsRune(s, '\\') {
		return "'" + strings.ReplaceAll(s, "'", "''") + "'"
	}
	return "E'" + strings.NewReplacer(`\`, `\\`, "'", "''").Replace(s) + "'"
}

// tableDDL creates the table if it is missing.
func tableDDL(n ddlNames) string {
	return `CREATE TABLE IF NOT EXISTS ` + n.table + ` (
    key_hash   bytea       PRIMARY KEY,             -- SHA-256 of the session token
    data       bytea       NOT NULL,                -- encoded session values
    version    bigint      NOT NULL DEFAULT 1,      -- +1 on every write of data
    expires_at timestamptz NOT NULL,                -- set from the database clock
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- Logged out. The row stays, empty, until expires_at, so that a request
    -- that loaded the session before the logout cannot save it back.
    deleted    boolean     NOT NULL DEFAULT false,
` + userColumns + `) WITH (fillfactor = 75); -- room on each page for HOT updates of its sessions
`
}

// indexDDL creates the index the purger's scans use.
func indexDDL(n ddlNames) string {
	return `CREATE INDEX IF NOT EXISTS ` + n.index + ` ON ` + n.table + ` (expires_at);
`
}

// userColumn is a column added after the first version: New adds those a
// table lacks, and upgrade.sql does.
type userColumn struct{ name, typ, comment string }

// userColumnList are the columns of the user index and the device list.
var userColumnList = [...]userColumn{
	{"user_id", "text", "Config.UserKey's value; NULL: no user"},
	{"last_seen", "timestamptz", "last write or touch"},
	{"client_ip", "text", "with Config.RecordClient"},
	{"user_agent", "text", "with Config.RecordClient"},
}

// userColumns is the column list of userColumnList, as in CREATE TABLE.
var userColumns = func() string {
	var b strings.Builder
	for i, c := range userColumnList {
		typ := c.typ
		if i < len(userColumnList)-1 {
			typ += ","
		}
		line := fmt.Sprintf("    %-10s %s", c.name, typ)
		b.WriteString(fmt.Sprintf("%-49s-- %s\n", line, c.comment))
	}
	return b.String()
}()

// addColumnsDDL adds the columns of userColumnList a table made by an
// earlier version lacks.
func addColumnsDDL(n ddlNames) string {
	var b strings.Builder
	b.WriteString(`ALTER TABLE ` + n.table)
	for i, c := range userColumnList {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("\n    ADD COLUMN IF NOT EXISTS " + c.name + " " + c.typ)
	}
	b.WriteString(";\n")
	return b.String()
}

// userIndexDDL creates the index that lists a user's sessions. Partial:
// sessions without a user, most of them on many sites, are not in it.
func userIndexDDL(n ddlNames) string {
	return `CREATE INDEX IF NOT EXISTS ` + n.userIndex + ` ON ` + n.table + ` (user_id) WHERE user_id IS NOT NULL;
`
}

// functionDDL creates or replaces the trigger function. It runs with the
// invoker's rights and a fixed search_path, and names every function it
// calls by schema. A statement of the store sets pgsession.store_write for
// its transaction (see storeWrite): the store notifies for itself, with
// versions. Any other UPDATE or DELETE notifies the keys of the rows it
// changed, as deleted (version 0: whatever version is cached goes), at
// most notifyItemsPerPayload per payload; more than triggerClearRows rows,
// and any TRUNCATE, notify the clear item instead.
func functionDDL(n ddlNames) string {
	clear := quoteLiteral(payloadPrefix(triggerOrigin) + clearItem)
	return `
-- Tells every pgsession instance's cache of changes made to the table by
-- other SQL (an administrator's DELETE, a migration's UPDATE, a TRUNCATE),
-- on the channel given as the trigger's argument. The store's own
-- statements set pgsession.store_write and notify for themselves.
CREATE OR REPLACE FUNCTION ` + n.function + `() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $pgsession$
BEGIN
    IF pg_catalog.current_setting('pgsession.store_write', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_catalog.pg_notify(TG_ARGV[0], ` + clear + `);
    ELSIF EXISTS (SELECT FROM old_rows OFFSET ` + strconv.Itoa(triggerClearRows) + `) THEN
        PERFORM pg_catalog.pg_notify(TG_ARGV[0], ` + clear + `);
    ELSE
        PERFORM pg_catalog.pg_notify(TG_ARGV[0], ` + quoteLiteral(payloadPrefix(triggerOrigin)) + ` ||
                pg_catalog.string_agg(pg_catalog.encode(key_hash, 'hex') || ':0', ' '))
            FROM (SELECT key_hash, (pg_catalog.row_number() OVER () - 1) / ` + strconv.Itoa(notifyItemsPerPayload) + ` AS chunk
                  FROM old_rows) k
            GROUP BY chunk;
    END IF;
    RETURN NULL;
END
$pgsession$;
`
}

// createTriggerDDL creates trigger tr.
func createTriggerDDL(n ddlNames, tr notifyTrigger) string {
	ref := ""
	if tr.referencing != "" {
		ref = "\n    " + tr.referencing
	}
	return `CREATE TRIGGER ` + n.trigger(tr) + ` AFTER ` + tr.event + ` ON ` + n.table + ref + `
    FOR EACH STATEMENT ` + skipStoreWrites + `
    EXECUTE FUNCTION ` + n.function + `(` + n.channel + `);
`
}

// skipStoreWrites keeps the trigger function from being called at all for
// the store's own statements, which notify for themselves: a call of a
// function with its own search_path would add measurably to every Save.
// (The function checks again.) The condition is parsed when the trigger is
// made, so it does not depend on the search_path it runs under.
const skipStoreWrites = `WHEN (pg_catalog.current_setting('pgsession.store_write', true) IS DISTINCT FROM 'on')`

// upgradeDDL adds what tables made by earlier versions lack: the user
// columns and index, the trigger function and the triggers, replaced if
// they exist (upgrade.sql).
func upgradeDDL(n ddlNames) string {
	return addColumnsDDL(n) + userIndexDDL(n) + triggersDDL(n)
}

// triggersDDL creates or replaces the trigger function and the triggers.
func triggersDDL(n ddlNames) string {
	var b strings.Builder
	b.WriteString(functionDDL(n))
	for _, tr := range notifyTriggers {
		b.WriteString(`DROP TRIGGER IF EXISTS ` + n.trigger(tr) + ` ON ` + n.table + `;
`)
		b.WriteString(createTriggerDDL(n, tr))
	}
	return b.String()
}

// ddl is the whole DDL for the names: schema.sql for the default ones.
// The triggers notify the default channel; with no schema it is the one
// of a table in schema public.
func ddl(schema, table string) string {
	channelSchema := schema
	if channelSchema == "" {
		channelSchema = "public"
	}
	n := newDDLNames(schema, table, defaultChannel(channelSchema, table))
	return tableDDL(n) + indexDDL(n) + userIndexDDL(n) + triggersDDL(n)
}
