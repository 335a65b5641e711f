package pgsession_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// rowHolds reports whether the only row of table satisfies cond, an SQL
// condition on its columns, on the database clock.
func rowHolds(t *testing.T, table, cond string) bool {
	t.Helper()
	var ok bool
	err := testDB.pool.QueryRow(context.Background(),
		"SELECT "+cond+" FROM "+pgx.Identifier{table}.Sanitize()).Scan(&ok)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// TestChangedSaveExpiry: a changed Save keeps the stored expiry while it
// lies within the refresh lag (so that the update can be HOT), writes a
// new one past it, starts a new session on a row that expired, and never
// sets an expiry past the session's start plus AbsoluteTimeout. The
// upsert computes all of it from the row it locked.
func TestChangedSaveExpiry(t *testing.T) {
	t.Parallel()
	const maxAge = "interval '30 days'" // DefaultCookieMaxAge; the lag is RefreshAfter, 5 minutes

	t.Run("Lag", func(t *testing.T) {
		t.Parallel()
		cfg := testConfig(t)
		s := newStore(t, testDB.pool, cfg)
		table := pgx.Identifier{cfg.Table}.Sanitize()
		sess, _ := login(t, s, map[any]any{"n": 0})
		var before time.Time
		if err := testDB.pool.QueryRow(context.Background(), "SELECT expires_at FROM "+table).Scan(&before); err != nil {
			t.Fatal(err)
		}
		sess.Values["n"] = 1
		save(t, s, sess)
		if !rowHolds(t, cfg.Table, "expires_at = '"+before.Format(time.RFC3339Nano)+"'::timestamptz AND version = 2") {
			t.Fatal("a changed Save within the refresh lag moved the expiry")
		}

		sqlExec(t, "UPDATE "+table+" SET expires_at = expires_at - interval '10 minutes'")
		sess.Values["n"] = 2
		save(t, s, sess)
		if !rowHolds(t, cfg.Table, "expires_at > now() + "+maxAge+" - interval '1 minute'") {
			t.Fatal("a changed Save past the refresh lag kept the old expiry")
		}

		sqlExec(t, "UPDATE "+table+" SET expires_at = now() - interval '1 second', created_at = now() - interval '1 day'")
		sess.Values["n"] = 3
		save(t, s, sess)
		if !rowHolds(t, cfg.Table, "created_at > now() - interval '1 minute' AND expires_at > now() + "+maxAge+" - interval '1 minute'") {
			t.Fatal("a changed Save of an expired row did not start a new session")
		}
	})

	t.Run("Absolute", func(t *testing.T) {
		t.Parallel()
		cfg := testConfig(t)
		cfg.AbsoluteTimeout = time.Hour
		s := newStore(t, testDB.pool, cfg)
		sess, _ := login(t, s, map[any]any{"n": 0})
		if !rowHolds(t, cfg.Table, "expires_at = created_at + interval '1 hour'") {
			t.Fatal("login: expiry not at created_at + AbsoluteTimeout")
		}
		// The session began half an hour earlier: its end comes closer.
		sqlExec(t, "UPDATE "+pgx.Identifier{cfg.Table}.Sanitize()+" SET created_at = created_at - interval '30 minutes'")
		sess.Values["n"] = 1
		save(t, s, sess)
		if !rowHolds(t, cfg.Table, "expires_at = created_at + interval '1 hour' AND version = 2") {
			t.Fatal("a changed Save set an expiry other than the session's start plus AbsoluteTimeout")
		}
	})
}
