package pgsession_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

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
	requireDB(t)
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

// limitedRole makes a login role with the given privileges on table and
// returns a pool that connects as it.
func limitedRole(t *testing.T, table, privileges string) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	role := "pgsession_" + hex.EncodeToString(randomBytes(6))
	password := hex.EncodeToString(randomBytes(12))
	qr := pgx.Identifier{role}.Sanitize()
	if _, err := testDB.pool.Exec(ctx, "CREATE ROLE "+qr+" LOGIN PASSWORD '"+password+"'"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, q := range []string{"DROP OWNED BY " + qr, "DROP ROLE " + qr} {
			if _, err := testDB.pool.Exec(context.Background(), q); err != nil {
				t.Errorf("%s: %v", q, err)
			}
		}
	})
	if privileges != "" {
		if _, err := testDB.pool.Exec(ctx, "GRANT "+privileges+" ON "+pgx.Identifier{table}.Sanitize()+" TO "+qr); err != nil {
			t.Fatal(err)
		}
	}
	pcfg, err := pgxpool.ParseConfig(testDB.url)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.ConnConfig.User, pcfg.ConnConfig.Password = role, password
	return newPoolConfig(t, pcfg)
}

func TestLeastPrivilegeRole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := testConfig(t)
	// The administrator provisions the table by migration...
	if _, err := testDB.pool.Exec(ctx, pgsession.DDL("", cfg.Table)); err != nil {
		t.Fatal(err)
	}
	// ...and grants exactly what the README says.
	pool := limitedRole(t, cfg.Table, "SELECT, INSERT, UPDATE, DELETE")

	t.Run("CREATE without SkipCreateTable", func(t *testing.T) {
		// Everything is there: New runs no DDL, so it needs no CREATE.
		s, err := pgsession.New(ctx, pool, cfg)
		if err != nil {
			t.Fatalf("New as a role without CREATE on a provisioned table: %v", err)
		}
		s.Close()
		// Something is missing: New would create it, and may not.
		for _, drop := range []string{
			"DROP INDEX " + pgx.Identifier{cfg.Table + "_expires_at_idx"}.Sanitize(),
			"DROP TRIGGER " + pgx.Identifier{cfg.Table + "_notify_update"}.Sanitize() + " ON " + pgx.Identifier{cfg.Table}.Sanitize(),
		} {
			if _, err := testDB.pool.Exec(ctx, drop); err != nil {
				t.Fatal(err)
			}
			_, err = pgsession.New(ctx, pool, cfg)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "42501" || !strings.Contains(err.Error(), "SkipCreateTable") {
				t.Fatalf("after %s, New as a role without CREATE: %v; want permission denied pointing at SkipCreateTable", drop, err)
			}
			if _, err := testDB.pool.Exec(ctx, pgsession.DDL("", cfg.Table)); err != nil {
				t.Fatal(err)
			}
		}
	})

	cfg.SkipCreateTable = true
	cfg.RefreshAfter = -1
	s := newStore(t, pool, cfg)
	sess, c := login(t, s, map[any]any{"user": "ada"})
	save(t, s, get(t, s, c)) // unchanged: refreshes the expiry (UPDATE)
	sess.Values["n"] = 1
	save(t, s, sess)
	if err := s.Regenerate(request(c), httptest.NewRecorder(), sess); err != nil {
		t.Fatalf("Regenerate: %v", err)
	}
	insertExpired(t, cfg.Table, 3)
	if n, err := s.PurgeExpired(ctx); err != nil || n != 3 {
		t.Fatalf("PurgeExpired: %d, %v", n, err)
	}
	if n, err := s.Len(ctx); err != nil || n != 1 {
		t.Fatalf("Len: %d, %v", n, err)
	}
	if err := s.Delete(ctx, sess.ID); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Clear(ctx); err != nil {
		t.Fatalf("Clear: %v", err)
	}
	if st := s.Stats(); st.Errors != 0 || st.Listener != pgsession.ListenerUp {
		t.Fatalf("stats %+v", st)
	}
}

func TestMissingPrivilegeFailsNew(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := testConfig(t)
	if _, err := testDB.pool.Exec(ctx, pgsession.DDL("", cfg.Table)); err != nil {
		t.Fatal(err)
	}
	pool := limitedRole(t, cfg.Table, "SELECT, INSERT, UPDATE")
	cfg.SkipCreateTable = true
	_, err := pgsession.New(ctx, pool, cfg)
	if err == nil || !strings.Contains(err.Error(), "lacks DELETE") || !strings.Contains(err.Error(), "GRANT") {
		t.Fatalf("New as a role without DELETE: %v; want an error naming DELETE and the GRANT", err)
	}
}

// TestDDLInjectionDoesNotRun: a table name that ends an SQL comment with a
// newline used to run the rest of itself as SQL, because the names were
// substituted into schema.sql's comments too.
func TestDDLInjectionDoesNotRun(t *testing.T) {
	t.Parallel()
	requireDB(t)
	ctx := context.Background()
	pwned := "pwned_" + hex.EncodeToString(randomBytes(4))
	table := "s\nCREATE TABLE " + pwned + "(x int);--"
	t.Cleanup(func() {
		for _, name := range []string{pwned, table} {
			if _, err := testDB.pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" CASCADE"); err != nil {
				t.Error(err)
			}
		}
	})
	exists := func() bool {
		var ok bool
		if err := testDB.pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", pwned).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}

	_, err := pgsession.New(ctx, testDB.pool, pgsession.Config{KeyPairs: [][]byte{hashKey}, Table: table})
	if !errors.Is(err, pgsession.ErrInvalidConfig) {
		t.Fatalf("New with a newline in Table: %v, want ErrInvalidConfig", err)
	}
	if exists() {
		t.Fatal("New ran SQL from the table's name")
	}
	// The DDL itself, whatever validation lets through, quotes the name.
	if _, err := testDB.pool.Exec(ctx, pgsession.DDL("", table)); err != nil {
		t.Fatal(err)
	}
	if exists() {
		t.Fatal("the DDL ran SQL from the table's name")
	}
}

// TestDDLWithCommentMarkersInNames: names with -- and /* in them make
// exactly the table, its key, its index, its function and its triggers.
func TestDDLWithCommentMarkersInNames(t *testing.T) {
	t.Parallel()
	requireDB(t)
	ctx := context.Background()
	suffix := hex.EncodeToString(randomBytes(4))
	schema, table := "s--/*"+suffix, "t--x/*y*/z"
	qs := pgx.Identifier{schema}.Sanitize()
	if _, err := testDB.pool.Exec(ctx, "CREATE SCHEMA "+qs); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := testDB.pool.Exec(context.Background(), "DROP SCHEMA "+qs+" CASCADE"); err != nil {
			t.Error(err)
		}
	})
	if _, err := testDB.pool.Exec(ctx, pgsession.DDL(schema, table)); err != nil {
		t.Fatal(err)
	}
	objects := func(sql string) []string {
		t.Helper()
		var names []string
		if err := testDB.pool.QueryRow(ctx, sql, schema).Scan(&names); err != nil {
			t.Fatal(err)
		}
		return names
	}
	want := map[string][]string{
		"relations": {table, table + "_expires_at_idx", table + "_pkey", table + "_user_id_idx"},
		"functions": {table + "_notify"},
		"triggers":  {table + "_notify_delete", table + "_notify_truncate", table + "_notify_update"},
	}
	got := map[string][]string{
		"relations": objects(`SELECT array_agg(c.relname::text ORDER BY c.relname) FROM pg_class c
			JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1`),
		"functions": objects(`SELECT array_agg(p.proname::text ORDER BY p.proname) FROM pg_proc p
			JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1`),
		"triggers": objects(`SELECT array_agg(t.tgname::text ORDER BY t.tgname) FROM pg_trigger t
			JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1`),
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("objects in the schema:\n%q\nwant\n%q", got, want)
	}
	// And a store runs on them.
	s := newStore(t, testDB.pool, pgsession.Config{KeyPairs: [][]byte{hashKey}, Schema: schema, Table: table, SkipCreateTable: true})
	_, c := login(t, s, map[any]any{"n": 1})
	if got := get(t, s, c); got.Values["n"] != 1 {
		t.Fatalf("values %v", got.Values)
	}
}

// TestLongestTableNameGetsItsIndexAndTriggers: PostgreSQL truncated the
// index name of a 63-byte table to the table's own name, and CREATE INDEX
// IF NOT EXISTS then skipped the index without a word.
func TestLongestTableNameGetsItsIndexAndTriggers(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.Table += strings.Repeat("x", 63-len(cfg.Table))
	t.Cleanup(func() {
		if _, err := testDB.pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+pgx.Identifier{cfg.Table}.Sanitize()); err != nil {
			t.Error(err)
		}
	})
	s := newStore(t, testDB.pool, cfg)
	if n := expiresAtIndexes(t, cfg.Table); n != 1 {
		t.Fatalf("%d indexes on expires_at, want 1", n)
	}
	if got := triggersOf(t, cfg.Table); len(got) != 3 {
		t.Fatalf("triggers %q, want 3", got)
	}
	// A second instance finds everything in place.
	newStore(t, newPool(t, testDB.url), cfg)
	if n := expiresAtIndexes(t, cfg.Table); n != 1 {
		t.Fatalf("%d indexes on expires_at after a second New, want 1", n)
	}
	_, c := login(t, s, map[any]any{"n": 1})
	if got := get(t, s, c); got.Values["n"] != 1 {
		t.Fatalf("values %v", got.Values)
	}
}

// expiresAtIndexes counts the table's indexes on expires_at.
func expiresAtIndexes(t testing.TB, table string) int {
	t.Helper()
	var n int
	err := testDB.pool.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_indexes WHERE schemaname = 'public' AND tablename = $1 AND indexdef LIKE '%(expires_at)'`, table).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
