package pgsession

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Setting up the session table: New creates it (unless SkipCreateTable)
// and checks that the store may use it.

// ddlLockClass is the first key of the advisory lock that serializes table
// creation, so that instances starting together do not race in CREATE
// TABLE IF NOT EXISTS (which can fail with a unique violation then).
const ddlLockClass = 0x70677364 // "pgsd"

// createTable creates the table and its indexes if they are missing, and
// adds the columns a table made by an earlier version lacks, under the
// creation lock. CREATE INDEX IF NOT EXISTS takes a SHARE lock on the
// table even when the index is there, which waits for every write under
// way and holds up every write behind it, so a table that has everything
// is left alone without any DDL.
func (s *Store) createTable(ctx context.Context) error {
	st, err := s.readTable(ctx, s.pool)
	if err == nil && !st.complete() {
		n := newDDLNames(s.cfg.Schema, s.cfg.Table, "")
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if err := s.lockDDL(ctx, tx); err != nil {
				return err
			}
			st, err := s.readTable(ctx, tx)
			if err != nil || st.complete() {
				return err
			}
			sql := ""
			if !st.exists {
				sql = tableDDL(n)
			} else if len(st.missing) > 0 {
				sql = addColumnsDDL(n)
			}
			// Any index on expires_at will do: one made by an earlier
			// version may carry a name PostgreSQL truncated.
			if !st.expiresIndexed {
				sql += indexDDL(n)
			}
			if !st.userIndexed {
				sql += userIndexDDL(n)
			}
			_, err = tx.Exec(ctx, sql)
			return err
		})
	}
	if err != nil {
		return fmt.Errorf("create session table %s (set SkipCreateTable to provision it yourself with schema.sql, or upgrade.sql for a table made by an earlier version): %w", s.sql.table, err)
	}
	return nil
}

// lockDDL takes the creation lock for the rest of tx.
func (s *Store) lockDDL(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, ddlLockClass, s.sql.table)
	return err
}

// tableState is what the catalog says of the session table.
type tableState struct {
	exists         bool
	expiresIndexed bool     // an index leads with expires_at
	userIndexed    bool     // an index leads with user_id
	missing        []string // columns of userColumnList the table lacks
}

func (st tableState) complete() bool {
	return st.exists && st.expiresIndexed && st.userIndexed && len(st.missing) == 0
}

// readTable reads the table's state from the catalog.
func (s *Store) readTable(ctx context.Context, q querier) (tableState, error) {
	var st tableState
	var columns []string
	err := q.QueryRow(ctx, `SELECT pg_catalog.to_regclass($1) IS NOT NULL,
			EXISTS (SELECT FROM pg_catalog.pg_index i
				JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
				WHERE i.indrelid = pg_catalog.to_regclass($1) AND a.attname = 'expires_at'),
			EXISTS (SELECT FROM pg_catalog.pg_index i
				JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
				WHERE i.indrelid = pg_catalog.to_regclass($1) AND a.attname = 'user_id'),
			ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
				WHERE a.attrelid = pg_catalog.to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped)`,
		s.sql.table).Scan(&st.exists, &st.expiresIndexed, &st.userIndexed, &columns)
	for _, c := range userColumnList {
		if !slices.Contains(columns, c.name) {
			st.missing = append(st.missing, c.name)
		}
	}
	return st, err
}

// querier is what the catalog queries need: a pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// tableChannel derives the default channel from the table's identity as
// PostgreSQL resolves it (schema and name), not from the configured
// spelling: Schema "" and Schema "public" reach one table, so they must
// share one channel.
func (s *Store) tableChannel(ctx context.Context) (string, error) {
	var schema, name string
	err := s.pool.QueryRow(ctx, `SELECT n.nspname, c.relname FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1::regclass`, s.sql.table).Scan(&schema, &name)
	if err != nil {
		return "", fmt.Errorf("resolve session table %s: %w", s.sql.table, err)
	}
	return defaultChannel(schema, name), nil
}

// ensureTriggers makes sure the table's triggers notify the store's
// channel of changes made by other SQL: it creates what is missing (unless
// SkipCreateTable), under the creation lock, and fails if the triggers
// notify another channel. Triggers already in place cost one catalog
// query and no lock: CREATE TRIGGER takes a SHARE ROW EXCLUSIVE lock on the
// table, which a fleet must not take on every New.
func (s *Store) ensureTriggers(ctx context.Context) error {
	st, err := s.readTriggers(ctx, s.pool)
	if err != nil {
		return err
	}
	if err := st.check(s); err != nil || len(st.missing) == 0 {
		return err
	}
	if s.cfg.SkipCreateTable {
		return fmt.Errorf("session table %s lacks the triggers that tell every instance's cache of changes made by other SQL (%s): "+
			"run upgrade.sql (beside schema.sql) as the table's owner, with the table's name in place of http_sessions and channel %q, or unset SkipCreateTable",
			s.sql.table, strings.Join(st.missing, ", "), s.cfg.Channel)
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := s.lockDDL(ctx, tx); err != nil {
			return err
		}
		st, err := s.readTriggers(ctx, tx)
		if err != nil {
			return err
		}
		if err := st.check(s); err != nil || len(st.missing) == 0 {
			return err
		}
		// The resolved schema: the function goes beside the table.
		n := newDDLNames(st.schema, st.table, s.cfg.Channel)
		sql := functionDDL(n)
		for _, tr := range notifyTriggers {
			if slices.Contains(st.missing, objectName(st.table, tr.suffix)) {
				sql += createTriggerDDL(n, tr)
			}
		}
		_, err = tx.Exec(ctx, sql)
		return err
	})
	if err != nil {
		if errors.Is(err, ErrInvalidConfig) {
			return err
		}
		return fmt.Errorf("create the triggers of session table %s (set SkipCreateTable and run upgrade.sql yourself): %w", s.sql.table, err)
	}
	return nil
}

// triggerState is what the catalog says of the table's notify triggers.
type triggerState struct {
	schema, table string            // the table as PostgreSQL resolves it
	channels      map[string]string // trigger name -> the channel it notifies
	missing       []string          // names of the triggers not there
}

func (s *Store) readTriggers(ctx context.Context, q querier) (triggerState, error) {
	var st triggerState
	var names []string
	var args [][]byte
	err := q.QueryRow(ctx, `SELECT n.nspname, c.relname,
			ARRAY(SELECT t.tgname::text FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid ORDER BY t.tgname),
			ARRAY(SELECT t.tgargs FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid ORDER BY t.tgname)
		FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = $1::regclass`, s.sql.table).Scan(&st.schema, &st.table, &names, &args)
	if err != nil {
		return st, fmt.Errorf("read the triggers of session table %s: %w", s.sql.table, err)
	}
	st.channels = make(map[string]string)
	for _, tr := range notifyTriggers {
		name := objectName(st.table, tr.suffix)
		i := slices.Index(names, name)
		if i < 0 {
			st.missing = append(st.missing, name)
			continue
		}
		// tgargs holds each argument followed by a NUL byte.
		st.channels[name] = strings.TrimSuffix(string(args[i]), "\x00")
	}
	return st, nil
}

// check fails if a trigger notifies a channel other than the store's: the
// instances that write the table would not hear each other.
func (st triggerState) check(s *Store) error {
	for _, tr := range notifyTriggers {
		name := objectName(st.table, tr.suffix)
		if ch, ok := st.channels[name]; ok && ch != s.cfg.Channel {
			return fmt.Errorf("%w: session table %s's trigger %s notifies channel %q while Config.Channel is %q: instances sharing a table must share a channel",
				ErrInvalidConfig, s.sql.table, pgx.Identifier{name}.Sanitize(), ch, s.cfg.Channel)
		}
	}
	return nil
}

// checkTable makes sure the table is there with the columns the store
// uses, and that the connecting role may do everything the store does with
// it, so that a missing grant fails New, not the first logout.
func (s *Store) checkTable(ctx context.Context) error {
	st, err := s.readTable(ctx, s.pool)
	if err != nil {
		return fmt.Errorf("check session table %s: %w", s.sql.table, err)
	}
	if st.exists && len(st.missing) > 0 {
		return fmt.Errorf("session table %s lacks the columns %s, added by this version: "+
			"run upgrade.sql (beside schema.sql) as the table's owner, with the table's name in place of http_sessions, or unset SkipCreateTable",
			s.sql.table, strings.Join(st.missing, ", "))
	}
	if st.exists && !st.userIndexed {
		s.log.Warn("pgsession: the session table has no index on user_id: listing a user's sessions scans the table; run upgrade.sql",
			"table", s.sql.table)
	}
	if _, err := s.pool.Exec(ctx, `SELECT key_hash, data, version, expires_at, created_at, deleted, user_id, last_seen, client_ip, user_agent FROM `+s.sql.table+` LIMIT 0`); err != nil {
		return fmt.Errorf("check session table %s: %w", s.sql.table, err)
	}
	var role string
	var missing []string
	err = s.pool.QueryRow(ctx, `SELECT current_user, array_remove(ARRAY[
			CASE WHEN has_table_privilege($1, 'SELECT') THEN NULL ELSE 'SELECT' END,
			CASE WHEN has_table_privilege($1, 'INSERT') THEN NULL ELSE 'INSERT' END,
			CASE WHEN has_table_privilege($1, 'UPDATE') THEN NULL ELSE 'UPDATE' END,
			CASE WHEN has_table_privilege($1, 'DELETE') THEN NULL ELSE 'DELETE' END], NULL)`,
		s.sql.table).Scan(&role, &missing)
	if err != nil {
		return fmt.Errorf("check privileges on %s: %w", s.sql.table, err)
	}
	if len(missing) > 0 {
		return fmt.Errorf("role %q lacks %s on session table %s: GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO %s",
			role, strings.Join(missing, ", "), s.sql.table, s.sql.table, pgx.Identifier{role}.Sanitize())
	}
	return nil
}
