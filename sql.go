package pgsession

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// The store's SQL: every statement it runs on the session table, and the
// table's DDL. Names are quoted with pgx.Identifier; values always go as
// parameters.

// queries are the store's SQL statements, with the table name in place.
type queries struct {
	table      string // quoted, schema-qualified table name
	load       string
	upsert     string
	refresh    string
	delete     string
	batch      string
	tombstoned string
	purge      string
	count      string
	clear      string
}

// storeWrite marks a statement as the store's own. The table's triggers
// notify only changes made by other SQL (an admin's DELETE, a migration's
// UPDATE): the store's statements notify for themselves, with versions, or
// need no notification (an expiry-only refresh, a purge of expired rows).
// Every UPDATE and DELETE of the store has it in its WHERE clause: an
// uncorrelated subquery, evaluated before the first row changes, whose
// setting ends with the transaction.
const storeWrite = `(SELECT set_config('pgsession.store_write', 'on', true)) = 'on'`

// onConflict is the conflict rule of every upsert, single or batched (the
// target table is aliased s): a write replaces data and expiry and bumps
// the version, unless the row is a tombstone that has not expired yet, in
// which case nothing is written and no row is returned (ErrDeleted).
const onConflict = `ON CONFLICT (key_hash) DO UPDATE
	SET data = excluded.data, expires_at = excluded.expires_at,
		version = s.version + 1, updated_at = now(), deleted = false
	WHERE (NOT s.deleted OR s.expires_at <= now()) AND ` + storeWrite

func newQueries(schema, table string) queries {
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
		upsert: `WITH w AS (
				INSERT INTO ` + t + ` AS s (key_hash, data, expires_at)
				VALUES ($1, $2, now() + $3::bigint * interval '1 microsecond')
				` + onConflict + `
				RETURNING version)
			SELECT w.version FROM w, pg_notify($4, $5 || encode($1::bytea, 'hex') || ':' || w.version)`,
		refresh: `UPDATE ` + t + ` SET expires_at = now() + $3::bigint * interval '1 microsecond'
			WHERE key_hash = $1 AND version = $2 AND expires_at > now() AND NOT deleted AND ` + storeWrite,
		// A delete leaves a tombstone (see schema.sql); purge removes it
		// once it expires.
		delete: `WITH d AS (` + tombstone(t, `key_hash = $1`) + `)
			SELECT count(*) FROM d, pg_notify($2, $3 || encode(d.key_hash, 'hex') || ':0')`,
		batch: batchSQL(t),
		tombstoned: `SELECT EXISTS (SELECT FROM ` + t +
			` WHERE key_hash = $1 AND deleted AND expires_at > now())`,
		// SKIP LOCKED: rows a concurrent writer or purger holds are left
		// for the next batch instead of waited for.
		purge: `DELETE FROM ` + t + ` WHERE key_hash IN (
				SELECT key_hash FROM ` + t + ` WHERE expires_at <= now()
				LIMIT $1 FOR UPDATE SKIP LOCKED) AND ` + storeWrite,
		count: `SELECT count(*) FROM ` + t + ` WHERE expires_at > now() AND NOT deleted`,
		// Tombstones too, so that requests under way cannot bring back
		// what Clear removed.
		clear: `WITH gone AS (DELETE FROM ` + t + ` WHERE expires_at <= now() AND ` + storeWrite + `)
			UPDATE ` + t + ` SET deleted = true, data = '\x', version = version + 1, updated_at = now()
			WHERE NOT deleted AND expires_at > now() AND ` + storeWrite,
	}
}

// tombstone is the statement that deletes the sessions matching where: it
// empties their rows and marks them deleted until they expire.
func tombstone(t, where string) string {
	return `UPDATE ` + t + ` SET deleted = true, data = '\x', version = version + 1, updated_at = now()
		WHERE ` + where + ` AND NOT deleted AND ` + storeWrite + ` RETURNING key_hash`
}

// batchSQL writes many sessions in one statement: a multi-row upsert, a
// multi-row delete, and one notification per notifyItemsPerPayload
// sessions, all in the statement's one transaction.
func batchSQL(t string) string {
	return `WITH u AS (
			SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bigint[]) AS u(key_hash, data, us)),
		w AS (
			INSERT INTO ` + t + ` AS s (key_hash, data, expires_at)
			SELECT key_hash, data, now() + us * interval '1 microsecond' FROM u
			` + onConflict + `
			RETURNING key_hash, version),
		ts AS (` + tombstone(t, `key_hash = ANY($4::bytea[])`) + `),
		d AS (
			SELECT key_hash, 0::bigint AS version FROM ts),
		a AS (
			SELECT key_hash, version FROM w UNION ALL SELECT key_hash, version FROM d),
		n AS (
			SELECT pg_notify($5, $6 || string_agg(encode(key_hash, 'hex') || ':' || version, ' '))
			FROM (SELECT key_hash, version, (row_number() OVER () - 1) / ` + fmt.Sprint(notifyItemsPerPayload) + ` AS chunk FROM a) x
			GROUP BY chunk)
		SELECT a.key_hash, a.version FROM a, (SELECT count(*) FROM n) c`
}

// The table's DDL is built here from quoted names: a configured name is
// never substituted into SQL text, so it can never land in a comment, and
// the comments are constants. schema.sql is this DDL for the default
// names; TestSchemaFiles keeps it equal.

// indexSuffix names the table's index after the table.
const indexSuffix = "_expires_at_idx"

// objectName is the name of the table's object with the given suffix:
// table+suffix when that fits in an identifier, else a prefix of table
// (cut on a character boundary), "_", 8 hex digits of table's SHA-256,
// and suffix. PostgreSQL would instead truncate table+suffix, which for a
// 63-byte table gives the table's own name (CREATE INDEX IF NOT EXISTS
// then skipped the index).
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

// ddlNames are the quoted names the DDL of one table uses.
type ddlNames struct {
	table string // quoted, schema-qualified if the schema is known
	index string // quoted; an index always goes in its table's schema
}

func newDDLNames(schema, table string) ddlNames {
	t := pgx.Identifier{table}.Sanitize()
	if schema != "" {
		t = pgx.Identifier{schema, table}.Sanitize()
	}
	return ddlNames{table: t, index: pgx.Identifier{objectName(table, indexSuffix)}.Sanitize()}
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
    deleted    boolean     NOT NULL DEFAULT false
);
`
}

// indexDDL creates the index the purger's scans use.
func indexDDL(n ddlNames) string {
	return `CREATE INDEX IF NOT EXISTS ` + n.index + ` ON ` + n.table + ` (expires_at);
`
}

// ddl is the whole DDL for the names: schema.sql for the default ones.
func ddl(schema, table string) string {
	n := newDDLNames(schema, table)
	return tableDDL(n) + indexDDL(n)
}
