package pgsession_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgsession/pgsession"
)

func TestSkipCreateTable(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.SkipCreateTable = true
	_, err := pgsession.New(context.Background(), testDB.pool, cfg)
	if err == nil || errors.Is(err, pgsession.ErrInvalidConfig) || !strings.Contains(err.Error(), cfg.Table) {
		t.Fatalf("New without the table: %v; want an error naming the table", err)
	}
	// Provisioned by "migration": the store works without creating anything.
	if _, err := testDB.pool.Exec(context.Background(), pgsession.DDL("", cfg.Table)); err != nil {
		t.Fatal(err)
	}
	s := newStore(t, testDB.pool, cfg)
	_, c := login(t, s, map[any]any{"n": 1})
	if got := get(t, s, c); got.Values["n"] != 1 {
		t.Fatalf("values %v", got.Values)
	}
}

func TestNamesAreQuoted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	schema := `Odd "Schema" ` + tableName(t)[len(tableName(t))-8:]
	qs := pgx.Identifier{schema}.Sanitize()
	if _, err := testDB.pool.Exec(ctx, "CREATE SCHEMA "+qs); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := testDB.pool.Exec(context.Background(), "DROP SCHEMA "+qs+" CASCADE"); err != nil {
			t.Error(err)
		}
	})
	cfg := pgsession.Config{KeyPairs: [][]byte{hashKey}, Schema: schema, Table: `Sess"ions; DROP TABLE x; --`}
	s := newStore(t, testDB.pool, cfg)
	_, c := login(t, s, map[any]any{"n": 1})
	if got := get(t, newStore(t, testDB.pool, cfg), c); got.Values["n"] != 1 {
		t.Fatalf("values %v", got.Values)
	}
	var n int
	err := testDB.pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{schema, cfg.Table}.Sanitize()).Scan(&n)
	if err != nil || n != 1 {
		t.Fatalf("rows in the quoted table: %d, %v", n, err)
	}
}

func TestInstancesStartingTogetherCreateTableOnce(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	goEach(t, 6, func(int) error {
		s, err := pgsession.New(context.Background(), testDB.pool, cfg)
		if err != nil {
			return fmt.Errorf("concurrent New: %w", err)
		}
		return s.Close()
	})()
}
