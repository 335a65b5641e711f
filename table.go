package pgsession

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Setting up the session table: New creates it (unless SkipCreateTable)
// and checks that the store may use it.

// ddlLockClass is the first key of the advisory lock that serializes table
// creation, so that instances starting together do not race in CREATE
// TABLE IF NOT EXISTS (which can fail with a unique violation then).
const ddlLockClass = 0x70677364 // "pgsd"

// createTable runs the table's DDL under the creation lock.
func (s *Store) createTable(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, ddlLockClass, s.sql.table); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, ddl(s.cfg.Schema, s.cfg.Table))
		return err
	})
	if err != nil {
		return fmt.Errorf("create session table %s (set SkipCreateTable to provision it yourself with schema.sql): %w", s.sql.table, err)
	}
	return nil
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
// channel of changes made by plain SQL. (Filled in by the schema work.)
func (s *Store) ensureTriggers(ctx context.Context) error { return nil }

// checkTable makes sure the table is there with the columns the store
// uses, and that the connecting role may do everything the store does with
// it, so that a missing grant fails New, not the first logout.
func (s *Store) checkTable(ctx context.Context) error {
	if _, err := s.pool.Exec(ctx, `SELECT key_hash, data, version, expires_at, deleted FROM `+s.sql.table+` LIMIT 0`); err != nil {
		return fmt.Errorf("check session table %s: %w", s.sql.table, err)
	}
	var role string
	var missing []string
	err := s.pool.QueryRow(ctx, `SELECT current_user, array_remove(ARRAY[
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
