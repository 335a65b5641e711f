package pgsession_test

import (
	"context"
	"encoding/hex"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgsession/pgsession"
)

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
		_, err := pgsession.New(ctx, pool, cfg)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" || !strings.Contains(err.Error(), "SkipCreateTable") {
			t.Fatalf("New as a role without CREATE: %v; want permission denied pointing at SkipCreateTable", err)
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
	if err := s.Clear(ctx); err != nil {
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
