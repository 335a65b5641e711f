package pgsession_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgsession/pgsession"
)

// keyOf is the key_hash of the session with the given ID.
func keyOf(t testing.TB, id string) []byte {
	t.Helper()
	tok, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil {
		t.Fatal(err)
	}
	k := sha256.Sum256(tok)
	return k[:]
}

// eventually reads the session cookie c names from every store, as a
// client that keeps making requests, until ok holds for each store's
// answer; it fails the test after 2 seconds.
func eventually(t *testing.T, what string, c *http.Cookie, ok func(*testing.T, map[any]any, bool) bool, stores ...*pgsession.Store) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		all := true
		for _, s := range stores {
			sess := get(t, s, c)
			all = all && ok(t, sess.Values, sess.IsNew)
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 2 s, a store still does not see %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSQLChangesReachEveryCache(t *testing.T) {
	t.Parallel()
	gone := func(_ *testing.T, _ map[any]any, isNew bool) bool { return isNew }
	tests := []struct {
		name   string
		change func(t *testing.T, table string, ids *sqlTargets) // the change by plain SQL
		seen   func(*testing.T, map[any]any, bool) bool
	}{
		{"DELETE", func(t *testing.T, table string, s *sqlTargets) {
			sqlExec(t, "DELETE FROM "+table+" WHERE key_hash = $1", keyOf(t, s.a))
		}, gone},
		{"TRUNCATE", func(t *testing.T, table string, _ *sqlTargets) {
			sqlExec(t, "TRUNCATE "+table)
		}, gone},
		{"UPDATE expires_at", func(t *testing.T, table string, s *sqlTargets) {
			sqlExec(t, "UPDATE "+table+" SET expires_at = now() WHERE key_hash = $1", keyOf(t, s.a))
		}, gone},
		{"UPDATE data", func(t *testing.T, table string, s *sqlTargets) {
			// The values another store encoded, under a's key and version.
			sqlExec(t, "UPDATE "+table+" SET data = (SELECT data FROM "+table+" WHERE key_hash = $2) WHERE key_hash = $1",
				keyOf(t, s.a), keyOf(t, s.c))
		}, func(t *testing.T, v map[any]any, isNew bool) bool {
			if isNew {
				t.Fatal("the session was lost")
			}
			return v["user"] == "grace"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t)
			a, b := twoStores(t, cfg)
			sess, c := login(t, a, map[any]any{"user": "ada"})
			// A third store, with no cache, makes the other encoding.
			third := cfg
			third.CacheSize = -1
			other, _ := login(t, newStore(t, testDB.pool, third), map[any]any{"user": "grace"})
			for _, s := range []*pgsession.Store{a, b} {
				if got := get(t, s, c); got.Values["user"] != "ada" {
					t.Fatalf("before: %v", got.Values)
				}
				if _, ok := pgsession.Cached(s, sess.ID); !ok {
					t.Fatal("the session is not cached")
				}
			}
			tt.change(t, pgx.Identifier{cfg.Table}.Sanitize(), &sqlTargets{a: sess.ID, c: other.ID})
			eventually(t, "the "+tt.name, c, tt.seen, a, b)
		})
	}
}

// sqlTargets are the IDs of the sessions a test changes by SQL: a's, and
// the one whose data it copies.
type sqlTargets struct{ a, c string }

func sqlExec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if _, err := testDB.pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// listen returns a connection of its own that LISTENs on channel.
func listen(t *testing.T, channel string) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testDB.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	return conn
}

// received returns the payloads conn received on channel up to the
// sentinel notification, which it sends.
func received(t *testing.T, conn *pgx.Conn, channel string) []string {
	t.Helper()
	const sentinel = "sentinel"
	sqlExec(t, "SELECT pg_notify($1, $2)", channel, sentinel)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var got []string
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			t.Fatalf("wait for notifications: %v (got %q)", err, got)
		}
		if n.Payload == sentinel {
			return got
		}
		got = append(got, n.Payload)
	}
}

// fromSQL returns the payloads sent by the table's triggers.
func fromSQL(payloads []string) []string {
	var out []string
	for _, p := range payloads {
		if strings.HasPrefix(p, "1 sql ") {
			out = append(out, p)
		}
	}
	return out
}

// TestStoreWritesDoNotFireTheTriggers: every UPDATE and DELETE the store
// runs notifies for itself, with versions; the triggers must stay quiet,
// or every write would cost a second notification and evict everywhere.
func TestStoreWritesDoNotFireTheTriggers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := testConfig(t)
	cfg.RefreshAfter = -1 // an unchanged Save refreshes the expiry: an UPDATE
	s := newStore(t, testDB.pool, cfg)
	batched := cfg
	batched.MaxBatch = 4
	conn := listen(t, pgsession.Channel(s))

	const n = 5
	var cookies []*http.Cookie
	for i := range n {
		sess, c := login(t, s, map[any]any{"n": i}) // INSERT
		sess.Values["n"] = i + 100
		save(t, s, sess)         // upsert over a conflict: UPDATE
		save(t, s, get(t, s, c)) // unchanged: expiry-only UPDATE
		cookies = append(cookies, c)
	}
	logout(t, s, cookies[0]) // tombstone UPDATE
	sess := get(t, s, cookies[1])
	if err := s.Regenerate(request(cookies[1]), httptest.NewRecorder(), sess); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, get(t, s, cookies[2]).ID); err != nil {
		t.Fatal(err)
	}
	// Concurrent writes of a batching store: one multi-row statement.
	bs := newStore(t, testDB.pool, batched)
	goEach(t, 8, func(i int) error {
		sess, err := bs.New(request(nil), cookieName)
		if err != nil {
			return err
		}
		sess.Values["b"] = i
		return bs.Save(request(nil), httptest.NewRecorder(), sess)
	})()
	insertExpired(t, cfg.Table, 3)
	if got, err := s.PurgeExpired(ctx); err != nil || got != 3 {
		t.Fatalf("PurgeExpired: %d, %v", got, err)
	}
	if _, err := s.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	payloads := received(t, conn, pgsession.Channel(s))
	if sql := fromSQL(payloads); len(sql) != 0 {
		t.Fatalf("the store's own writes fired the triggers: %q", sql)
	}
	if len(payloads) == 0 {
		t.Fatal("no notifications at all")
	}

	// The same listener hears a change by other SQL: the triggers are there.
	sqlExec(t, "DELETE FROM "+pgx.Identifier{cfg.Table}.Sanitize())
	if sql := fromSQL(received(t, conn, pgsession.Channel(s))); len(sql) != 1 {
		t.Fatalf("a DELETE by SQL sent %q, want one payload", sql)
	}
}

// TestStoreWritesNotifyOncePerSave: a listening store counts exactly one
// notification per Save of another store.
func TestStoreWritesNotifyOncePerSave(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.MaxBatch = 1
	a, b := twoStores(t, cfg)
	before := b.Stats().Notifications
	sess, _ := login(t, a, map[any]any{"n": 0})
	const n = 20
	for i := 1; i < n; i++ {
		sess.Values["n"] = i
		save(t, a, sess)
	}
	waitFor(t, "b to hear every save", func() bool { return b.Stats().Notifications >= before+n })
	time.Sleep(100 * time.Millisecond) // room for any extra notification to arrive
	if got := b.Stats().Notifications - before; got != n {
		t.Fatalf("b heard %d notifications for %d saves", got, n)
	}
}

// TestTriggerPayloads: keys go 90 to a payload, as deletes; a statement of
// more than 1000 rows sends the clear item instead.
func TestTriggerPayloads(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := newStore(t, testDB.pool, cfg)
	table := pgx.Identifier{cfg.Table}.Sanitize()
	conn := listen(t, pgsession.Channel(s))
	sqlExec(t, "INSERT INTO "+table+" (key_hash, data, expires_at) SELECT sha256(i::text::bytea), '\\x', now() + interval '1 hour' FROM generate_series(1, 1001) i")

	sqlExec(t, "UPDATE "+table+" SET data = '\\x00' WHERE key_hash IN (SELECT sha256(i::text::bytea) FROM generate_series(1, 200) i)")
	payloads := received(t, conn, pgsession.Channel(s))
	keys := map[string]bool{}
	for _, p := range payloads {
		items := strings.Fields(p)[2:]
		if len(items) > 90 {
			t.Errorf("a payload of %d items", len(items))
		}
		for _, it := range items {
			k, v, _ := strings.Cut(it, ":")
			if v != "0" {
				t.Errorf("item %q: want version 0", it)
			}
			keys[k] = true
		}
	}
	if len(payloads) != 3 || len(keys) != 200 {
		t.Fatalf("200 rows: %d payloads, %d keys; want 3 and 200", len(payloads), len(keys))
	}

	sqlExec(t, "UPDATE "+table+" SET data = '\\x01'") // 1001 rows
	if got := received(t, conn, pgsession.Channel(s)); len(got) != 1 || got[0] != "1 sql *" {
		t.Fatalf("1001 rows: %q, want the clear item", got)
	}
	sqlExec(t, "DELETE FROM "+table+" WHERE key_hash IN (SELECT sha256(i::text::bytea) FROM generate_series(1, 1000) i)")
	if got := received(t, conn, pgsession.Channel(s)); len(got) != 12 {
		t.Fatalf("1000 rows: %d payloads, want 12 of keys", len(got))
	}
	sqlExec(t, "UPDATE "+table+" SET data = '\\x02' WHERE false")
	if got := received(t, conn, pgsession.Channel(s)); len(got) != 0 {
		t.Fatalf("no rows: %q, want nothing", got)
	}
}

// oldSchema is the DDL of the version before the triggers.
const oldSchema = `CREATE TABLE %[1]s (
    key_hash   bytea       PRIMARY KEY,
    data       bytea       NOT NULL,
    version    bigint      NOT NULL DEFAULT 1,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted    boolean     NOT NULL DEFAULT false
);
CREATE INDEX %[2]s ON %[1]s (expires_at);`

// oldTable makes a table as the version before the triggers did, with one
// session in it, and returns its config and the session's cookie. The
// table's name is padded to at least minLen bytes.
func oldTable(t *testing.T, minLen int) (pgsession.Config, *http.Cookie) {
	t.Helper()
	cfg := testConfig(t)
	cfg.Table += strings.Repeat("x", max(0, minLen-len(cfg.Table)))
	table := pgx.Identifier{cfg.Table}.Sanitize()
	t.Cleanup(func() {
		if _, err := testDB.pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+table); err != nil {
			t.Error(err)
		}
	})
	index := pgx.Identifier{cfg.Table + "_expires_at_idx"}.Sanitize() // PostgreSQL truncates it
	sqlExec(t, strings.ReplaceAll(strings.ReplaceAll(oldSchema, "%[1]s", table), "%[2]s", index))

	var tok [32]byte
	copy(tok[:], randomBytes(32))
	k := sha256.Sum256(tok[:])
	data, err := pgsession.DefaultSerializer{}.Serialize(map[any]any{"user": "ada"})
	if err != nil {
		t.Fatal(err)
	}
	sqlExec(t, "INSERT INTO "+table+" (key_hash, data, expires_at) VALUES ($1, $2, now() + interval '1 hour')", k[:], data)
	value, err := pgsession.SignCookie(cfg.KeyPairs, cookieName, tok, 1)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, &http.Cookie{Name: cookieName, Value: value}
}

// triggersOf returns the names of the table's triggers.
func triggersOf(t testing.TB, table string) []string {
	t.Helper()
	var names []string
	err := testDB.pool.QueryRow(context.Background(),
		`SELECT coalesce(array_agg(tgname::text ORDER BY tgname), '{}') FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal`,
		pgx.Identifier{table}.Sanitize()).Scan(&names)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestNewUpgradesATableWithoutTriggers(t *testing.T) {
	t.Parallel()
	// 55 bytes: PostgreSQL truncated the old index's name.
	cfg, c := oldTable(t, 55)

	skip := cfg
	skip.SkipCreateTable = true
	_, err := pgsession.New(context.Background(), testDB.pool, skip)
	if err == nil || !strings.Contains(err.Error(), "upgrade.sql") {
		t.Fatalf("New with SkipCreateTable on a table without triggers: %v; want an error naming upgrade.sql", err)
	}

	s := newStore(t, testDB.pool, cfg)
	if got := triggersOf(t, cfg.Table); len(got) != 3 {
		t.Fatalf("triggers after New: %q", got)
	}
	if n := expiresAtIndexes(t, cfg.Table); n != 1 {
		t.Fatalf("%d indexes on expires_at after New, want the old one alone", n)
	}
	if got := get(t, s, c); got.IsNew || got.Values["user"] != "ada" {
		t.Fatalf("the old session after the upgrade: new %v, values %v", got.IsNew, got.Values)
	}
	// Upgraded in place: the triggers work, and SkipCreateTable is happy.
	other := newStore(t, newPool(t, testDB.url), skip)
	get(t, other, c)
	sqlExec(t, "DELETE FROM "+pgx.Identifier{cfg.Table}.Sanitize())
	eventually(t, "the DELETE", c, func(_ *testing.T, _ map[any]any, isNew bool) bool { return isNew }, s, other)
}

// TestUpgradeFile: upgrade.sql, with the table's name in place of
// http_sessions as the README says, upgrades a table for SkipCreateTable.
// (That works for names of up to 46 bytes; longer ones get shortened
// channel and trigger names, which New's error lists.)
func TestUpgradeFile(t *testing.T) {
	t.Parallel()
	cfg, c := oldTable(t, 0)
	upgrade, err := os.ReadFile("upgrade.sql")
	if err != nil {
		t.Fatal(err)
	}
	sqlExec(t, strings.ReplaceAll(string(upgrade), "http_sessions", cfg.Table))
	// Twice: it is idempotent.
	sqlExec(t, strings.ReplaceAll(string(upgrade), "http_sessions", cfg.Table))
	cfg.SkipCreateTable = true
	a, b := twoStores(t, cfg)
	for _, s := range []*pgsession.Store{a, b} {
		if got := get(t, s, c); got.Values["user"] != "ada" {
			t.Fatalf("values %v", got.Values)
		}
	}
	sqlExec(t, "TRUNCATE "+pgx.Identifier{cfg.Table}.Sanitize())
	eventually(t, "the TRUNCATE", c, func(_ *testing.T, _ map[any]any, isNew bool) bool { return isNew }, a, b)
}

func TestTriggerOnAnotherChannelFailsNew(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := newStore(t, testDB.pool, cfg)
	for _, skip := range []bool{false, true} {
		other := cfg
		other.Channel = "pgsession_elsewhere"
		other.SkipCreateTable = skip
		_, err := pgsession.New(context.Background(), testDB.pool, other)
		if !errors.Is(err, pgsession.ErrInvalidConfig) ||
			!strings.Contains(err.Error(), pgsession.Channel(s)) || !strings.Contains(err.Error(), "pgsession_elsewhere") {
			t.Fatalf("New on another channel (SkipCreateTable %v): %v; want ErrInvalidConfig naming both channels", skip, err)
		}
	}
	// The triggers were left alone.
	same := cfg
	same.Channel = pgsession.Channel(s)
	same.SkipCreateTable = true
	newStore(t, testDB.pool, same)
}

// TestNewAddsTheUserColumns: a table made by the version before the user
// columns (triggers in place, no user_id) is upgraded in place by New,
// and its sessions still load; with SkipCreateTable, New names the
// upgrade script.
func TestNewAddsTheUserColumns(t *testing.T) {
	t.Parallel()
	cfg, c := oldTable(t, 0)
	newStore(t, testDB.pool, cfg).Close() // the triggers, as the previous version made them
	table := pgx.Identifier{cfg.Table}.Sanitize()
	sqlExec(t, "DROP INDEX "+pgx.Identifier{cfg.Table + "_user_id_idx"}.Sanitize())
	sqlExec(t, "ALTER TABLE "+table+" DROP COLUMN user_id, DROP COLUMN last_seen, DROP COLUMN client_ip, DROP COLUMN user_agent")

	skip := cfg
	skip.SkipCreateTable = true
	_, err := pgsession.New(context.Background(), testDB.pool, skip)
	if err == nil || !strings.Contains(err.Error(), "upgrade.sql") || !strings.Contains(err.Error(), "user_id") {
		t.Fatalf("New with SkipCreateTable on a table without the user columns: %v; want an error naming upgrade.sql and user_id", err)
	}

	s := newStore(t, testDB.pool, cfg)
	if got := get(t, s, c); got.IsNew || got.Values["user"] != "ada" {
		t.Fatalf("the old session after the upgrade: new %v, values %v", got.IsNew, got.Values)
	}
	var columns, indexes int
	err = testDB.pool.QueryRow(context.Background(), `SELECT
			(SELECT count(*) FROM pg_attribute WHERE attrelid = $1::regclass AND attname IN ('user_id', 'last_seen', 'client_ip', 'user_agent') AND NOT attisdropped),
			(SELECT count(*) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
				WHERE i.indrelid = $1::regclass AND a.attname = 'user_id')`, table).Scan(&columns, &indexes)
	if err != nil {
		t.Fatal(err)
	}
	if columns != 4 || indexes != 1 {
		t.Fatalf("after New: %d user columns, %d user_id indexes; want 4 and 1", columns, indexes)
	}
	// And SkipCreateTable is happy now.
	other := newStore(t, newPool(t, testDB.url), skip)
	if got := get(t, other, c); got.Values["user"] != "ada" {
		t.Fatalf("values %v", got.Values)
	}
}
