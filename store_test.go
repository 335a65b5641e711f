package pgsession_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/securecookie"
	"github.com/gorilla/sessions"
	"github.com/jackc/pgx/v5"

	"github.com/pgsession/pgsession"
)

func TestNewRejectsInvalidConfig(t *testing.T) {
	t.Parallel()
	good := func() pgsession.Config { return pgsession.Config{KeyPairs: [][]byte{hashKey}} }
	tests := []struct {
		name   string
		modify func(*pgsession.Config)
	}{
		{"no keys", func(c *pgsession.Config) { c.KeyPairs = nil }},
		{"short hash key", func(c *pgsession.Config) { c.KeyPairs = [][]byte{[]byte("secret")} }},
		{"short rotated hash key", func(c *pgsession.Config) { c.KeyPairs = [][]byte{hashKey, nil, []byte("old")} }},
		{"bad block key", func(c *pgsession.Config) { c.KeyPairs = [][]byte{hashKey, []byte("0123456789")} }},
		{"table too long", func(c *pgsession.Config) { c.Table = strings.Repeat("t", 64) }},
		{"schema too long", func(c *pgsession.Config) { c.Schema = strings.Repeat("s", 64) }},
		{"NUL in table", func(c *pgsession.Config) { c.Table = "a\x00b" }},
		{"invalid UTF-8 in table", func(c *pgsession.Config) { c.Table = "a\xffb" }},
		{"negative MaxLength", func(c *pgsession.Config) { c.MaxLength = -1 }},
		{"sub-second BrowserSessionTTL", func(c *pgsession.Config) { c.BrowserSessionTTL = time.Millisecond }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good()
			tt.modify(&cfg)
			s, err := pgsession.New(context.Background(), testDB.pool, cfg)
			if !errors.Is(err, pgsession.ErrInvalidConfig) {
				t.Fatalf("New: got %v, want ErrInvalidConfig", err)
			}
			if s != nil {
				t.Fatal("New returned a store with an error")
			}
		})
	}
	t.Run("nil pool", func(t *testing.T) {
		if _, err := pgsession.New(context.Background(), nil, good()); !errors.Is(err, pgsession.ErrInvalidConfig) {
			t.Fatalf("New: got %v, want ErrInvalidConfig", err)
		}
	})
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	s := newStore(t, testDB.pool, testConfig(t))
	now := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	values := map[any]any{"user": "ada", "id": 42, "admin": true, "at": now, "raw": []byte{0, 1, 2}}
	sess, c := login(t, s, values)
	if sess.ID == "" || sess.IsNew != true {
		t.Fatalf("after first Save: ID %q IsNew %v", sess.ID, sess.IsNew)
	}
	if !c.HttpOnly || c.Path != "/" || c.SameSite != http.SameSiteLaxMode || c.MaxAge != pgsession.DefaultCookieMaxAge {
		t.Fatalf("cookie attributes: %+v", c)
	}

	got := get(t, s, c)
	if got.IsNew || got.ID != sess.ID {
		t.Fatalf("Get: IsNew %v ID %q, want false %q", got.IsNew, got.ID, sess.ID)
	}
	if !reflect.DeepEqual(got.Values, values) {
		t.Fatalf("Get values = %#v, want %#v", got.Values, values)
	}

	// A second store with a cold cache reads the same from the database.
	other := newStore(t, testDB.pool, sameTable(t, s, testConfigFor(s)))
	got = get(t, other, c)
	if !reflect.DeepEqual(got.Values, values) {
		t.Fatalf("second store: values = %#v, want %#v", got.Values, values)
	}
	if st := other.Stats(); st.Loads != 1 || st.CacheMisses != 1 {
		t.Fatalf("second store stats %+v, want 1 load and 1 miss", st)
	}
}

// configs remembers the Config each test store was made with, so a second
// store can be opened on the same table.
var configs sync.Map // *pgsession.Store -> pgsession.Config

func testConfigFor(s *pgsession.Store) pgsession.Config {
	c, _ := configs.Load(s)
	return c.(pgsession.Config)
}

func sameTable(t testing.TB, _ *pgsession.Store, c pgsession.Config) pgsession.Config { return c }

func TestTokenNeverReachesDatabase(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := newStore(t, testDB.pool, cfg)
	sess, _ := login(t, s, map[any]any{"k": "v"})

	raw, err := base64.RawURLEncoding.DecodeString(sess.ID)
	if err != nil || len(raw) != 32 {
		t.Fatalf("session ID %q is not a base64url 32-byte token", sess.ID)
	}
	want := sha256.Sum256(raw)
	var dump string
	var key []byte
	err = testDB.pool.QueryRow(context.Background(),
		"SELECT key_hash, t::text FROM "+pgx.Identifier{cfg.Table}.Sanitize()+" t").Scan(&key, &dump)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(key, want[:]) {
		t.Fatalf("key_hash = %x, want sha256(token) = %x", key, want)
	}
	for _, leak := range []string{sess.ID, strings.TrimPrefix(bytesHex(raw), "")} {
		if strings.Contains(dump, leak) {
			t.Fatalf("row %q contains the raw token", dump)
		}
	}
}

func bytesHex(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

func TestCacheHitCostsNoQuery(t *testing.T) {
	t.Parallel()
	s := newStore(t, testDB.pool, testConfig(t))
	_, c := login(t, s, map[any]any{"n": 1})
	before := s.Stats()
	for range 3 {
		get(t, s, c)
	}
	st := s.Stats()
	if st.CacheHits-before.CacheHits != 3 || st.Loads != before.Loads {
		t.Fatalf("stats %+v after 3 Gets of a cached session (before %+v): want 3 hits and no load", st, before)
	}
	if st.Entries != 1 {
		t.Fatalf("Entries = %d, want 1", st.Entries)
	}
}

func TestCacheDisabledReadsDatabase(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.CacheSize = -1
	s := newStore(t, testDB.pool, cfg)
	_, c := login(t, s, map[any]any{"n": 1})
	for range 3 {
		if v := get(t, s, c).Values["n"]; v != 1 {
			t.Fatalf("n = %v", v)
		}
	}
	if st := s.Stats(); st.Loads != 3 || st.CacheHits != 0 || st.Entries != 0 {
		t.Fatalf("stats %+v: want 3 loads, no hits, no entries", st)
	}
}

func TestEveryGetGetsItsOwnValuesMap(t *testing.T) {
	t.Parallel()
	s := newStore(t, testDB.pool, testConfig(t))
	_, c := login(t, s, map[any]any{"cart": "apple"})
	a := get(t, s, c)
	b := get(t, s, c)
	a.Values["cart"] = "changed, never saved"
	a.Values["extra"] = 1
	if b.Values["cart"] != "apple" || len(b.Values) != 1 {
		t.Fatalf("a second request sees another's unsaved change: %v", b.Values)
	}
	if v := get(t, s, c).Values; v["cart"] != "apple" || len(v) != 1 {
		t.Fatalf("the cache kept an unsaved change: %v", v)
	}
}

func TestConcurrentMissesShareOneQuery(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	writer := newStore(t, testDB.pool, cfg)
	sess, c := login(t, writer, map[any]any{"n": 7})
	reader := newStore(t, testDB.pool, cfg) // cold cache

	// Hold the table so the first load blocks, and every other Get piles up
	// behind it.
	ctx := context.Background()
	tx, err := testDB.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "LOCK TABLE "+pgx.Identifier{cfg.Table}.Sanitize()+" IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	const n = 20
	wait := goEach(t, n, func(int) error {
		got, err := reader.Get(request(c), cookieName)
		if err == nil && got.Values["n"] != 7 {
			err = errors.New("wrong values")
		}
		return err
	})
	waitFor(t, "all Gets to wait on one load", func() bool { return pgsession.FlightWaiters(reader, sess.ID) == n-1 })
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	wait()
	if st := reader.Stats(); st.Loads != 1 {
		t.Fatalf("%d concurrent misses ran %d loads, want 1", n, st.Loads)
	}
}

func TestMissingOrExpiredIsNewSession(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	clk := newClock()
	s := newStoreClock(t, testDB.pool, cfg, clk.Now)
	table := pgx.Identifier{cfg.Table}.Sanitize()
	ctx := context.Background()

	t.Run("expired row", func(t *testing.T) {
		_, c := login(t, s, map[any]any{"n": 1})
		if _, err := testDB.pool.Exec(ctx, "UPDATE "+table+" SET expires_at = now() - interval '1 second'"); err != nil {
			t.Fatal(err)
		}
		// The cached copy is still within its deadline by the store's clock;
		// move past the deadline the row had.
		clk.Advance(time.Duration(pgsession.DefaultCookieMaxAge)*time.Second + time.Second)
		got, err := s.Get(request(c), cookieName)
		if err != nil || !got.IsNew || got.ID != "" || len(got.Values) != 0 {
			t.Fatalf("expired session: err %v IsNew %v ID %q values %v", err, got.IsNew, got.ID, got.Values)
		}
	})
	t.Run("deleted row", func(t *testing.T) {
		cold := newStore(t, testDB.pool, cfg)
		_, c := login(t, s, map[any]any{"n": 2})
		if _, err := testDB.pool.Exec(ctx, "DELETE FROM "+table); err != nil {
			t.Fatal(err)
		}
		got, err := cold.Get(request(c), cookieName)
		if err != nil || !got.IsNew || len(got.Values) != 0 {
			t.Fatalf("deleted session: err %v IsNew %v values %v", err, got.IsNew, got.Values)
		}
	})
}

func TestBadCookiesAreNewSessionsWithoutQuery(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := newStore(t, testDB.pool, cfg)
	_, c := login(t, s, map[any]any{"n": 1})

	foreign := securecookie.New(securecookie.GenerateRandomKey(32), nil)
	foreignValue, err := foreign.Encode(cookieName, []byte("anything"))
	if err != nil {
		t.Fatal(err)
	}
	flip := []byte(c.Value)
	flip[len(flip)/2] ^= 1
	cases := map[string]string{
		"tampered":    string(flip),
		"truncated":   c.Value[:len(c.Value)-5],
		"foreign key": foreignValue,
		"garbage":     "not-a-cookie",
		"empty":       "",
	}
	for name, value := range cases {
		t.Run(name, func(t *testing.T) {
			before := s.Stats()
			got, err := s.Get(request(&http.Cookie{Name: cookieName, Value: value}), cookieName)
			if err != nil || got == nil || !got.IsNew || len(got.Values) != 0 {
				t.Fatalf("got %v, %v; want a new session and no error", got, err)
			}
			st := s.Stats()
			if st.Loads != before.Loads || st.CacheHits != before.CacheHits {
				t.Fatalf("a bad cookie cost a lookup: stats %+v before %+v", st, before)
			}
			if st.InvalidCookies != before.InvalidCookies+1 {
				t.Fatalf("InvalidCookies %d, want %d", st.InvalidCookies, before.InvalidCookies+1)
			}
		})
	}
}

func TestKeyRotation(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	old := newStore(t, testDB.pool, cfg)
	_, c := login(t, old, map[any]any{"n": 1})

	newHash := bytes.Repeat([]byte("n"), 64)
	cfg.KeyPairs = [][]byte{newHash, nil, hashKey, blockKey}
	rotated := newStore(t, testDB.pool, cfg)
	sess := get(t, rotated, c)
	if sess.IsNew || sess.Values["n"] != 1 {
		t.Fatalf("a cookie signed with the previous key was not accepted: %v", sess.Values)
	}
	// An unchanged Save re-signs a cookie that came with the previous key,
	// so clients move to the new key as they come by.
	c3 := save(t, rotated, get(t, rotated, c))
	cfgNew := cfg
	cfgNew.KeyPairs = [][]byte{newHash}
	if got := get(t, newStore(t, testDB.pool, cfgNew), c3); got.IsNew || got.Values["n"] != 1 {
		t.Fatalf("the unchanged Save kept the previous key's signature: %v", got.Values)
	}
	// The rotated store signs with the new key: the old store no longer
	// accepts what it issues.
	sess.Values["n"] = 2
	c2 := save(t, rotated, sess)
	if got := get(t, old, c2); !got.IsNew {
		t.Fatal("the old key verified a cookie signed with the new one")
	}
}

func TestSaveMaxAgeNegativeDeletes(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := newStore(t, testDB.pool, cfg)
	other := newStore(t, testDB.pool, cfg)
	_, c := login(t, s, map[any]any{"user": "ada"})
	get(t, other, c) // cached in other too, before the delete (the coherence issue makes that one evict)

	sess := get(t, s, c)
	id := sess.ID
	sess.Options.MaxAge = -1
	w := httptest.NewRecorder()
	if err := s.Save(request(c), w, sess); err != nil {
		t.Fatal(err)
	}
	expired := responseCookie(t, w)
	if expired == nil || expired.MaxAge >= 0 || expired.Value != "" {
		t.Fatalf("cookie after delete: %+v, want an expired, empty cookie", expired)
	}
	if sess.ID != "" {
		t.Fatalf("deleted session keeps ID %q", sess.ID)
	}
	if _, ok := pgsession.Cached(s, id); ok {
		t.Fatal("deleted session still cached")
	}
	if n := liveRows(t, cfg.Table); n != 0 {
		t.Fatalf("%d live rows after delete", n)
	}
	if got := get(t, s, c); !got.IsNew {
		t.Fatal("deleted session still served")
	}
	if st := s.Stats(); st.Deletes != 1 {
		t.Fatalf("Deletes = %d", st.Deletes)
	}
}

// rowExpiry returns expires_at - now() of the only row, on the database clock.
func rowExpiry(t testing.TB, table string) (time.Duration, int64) {
	t.Helper()
	var us, version int64
	err := testDB.pool.QueryRow(context.Background(),
		"SELECT (extract(epoch FROM expires_at - now()) * 1e6)::bigint, version FROM "+pgx.Identifier{table}.Sanitize()).Scan(&us, &version)
	if err != nil {
		t.Fatal(err)
	}
	return time.Duration(us) * time.Microsecond, version
}

func TestExpiryFollowsMaxAgeOnDatabaseClock(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		maxAge int
		want   time.Duration
	}{
		{"MaxAge one hour", 3600, time.Hour},
		{"MaxAge 0 is a browser session", 0, 2 * time.Hour},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t)
			cfg.BrowserSessionTTL = 2 * time.Hour
			s := newStore(t, testDB.pool, cfg)
			sess := get(t, s, nil)
			sess.Options.MaxAge = tt.maxAge
			sess.Values["k"] = "v"
			c := save(t, s, sess)
			if c.MaxAge != tt.maxAge || (tt.maxAge == 0 && !c.Expires.IsZero()) {
				t.Fatalf("cookie MaxAge %d Expires %v, want %d", c.MaxAge, c.Expires, tt.maxAge)
			}
			got, _ := rowExpiry(t, cfg.Table)
			if got > tt.want || got < tt.want-time.Minute {
				t.Fatalf("row expires in %v, want about %v", got, tt.want)
			}
		})
	}
}

func TestVersionIncrementsOnEveryWrite(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := newStore(t, testDB.pool, cfg)
	sess, _ := login(t, s, map[any]any{"n": 0})
	for i := 1; i <= 3; i++ {
		sess.Values["n"] = i
		save(t, s, sess)
		if _, v := rowExpiry(t, cfg.Table); v != int64(i+1) {
			t.Fatalf("after write %d version = %d, want %d", i+1, v, i+1)
		}
		if v, ok := pgsession.Cached(s, sess.ID); !ok || v != int64(i+1) {
			t.Fatalf("cached version %d (cached %v), want %d", v, ok, i+1)
		}
	}
}

func TestSaveUnchangedSkipsDatabase(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.RefreshAfter = time.Minute
	clk := newClock()
	s := newStoreClock(t, testDB.pool, cfg, clk.Now)
	_, c := login(t, s, map[any]any{"user": "ada", "n": 1})
	_, v0 := rowExpiry(t, cfg.Table)

	// Unchanged, expiry fresh: no round trip, but the cookie is still set.
	sess := get(t, s, c)
	before := s.Stats()
	c2 := save(t, s, sess)
	if c2 == nil {
		t.Fatal("an unchanged Save set no cookie")
	}
	if got := get(t, newStore(t, testDB.pool, cfg), c2); got.IsNew || got.Values["user"] != "ada" {
		t.Fatalf("the cookie of an unchanged Save does not open the session: %v", got.Values)
	}
	if st := s.Stats(); st.SavesSkipped != before.SavesSkipped+1 || st.Saves != before.Saves || st.Refreshes != before.Refreshes {
		t.Fatalf("unchanged Save: stats %+v (before %+v), want one skip", st, before)
	}

	// Unchanged but the stored expiry lags by more than RefreshAfter: only
	// the expiry is written, the version stays.
	clk.Advance(2 * time.Minute)
	if _, err := testDB.pool.Exec(context.Background(),
		"UPDATE "+pgx.Identifier{cfg.Table}.Sanitize()+" SET expires_at = expires_at - interval '2 minutes'"); err != nil {
		t.Fatal(err)
	}
	lagged, _ := rowExpiry(t, cfg.Table)
	sess = get(t, s, c)
	save(t, s, sess)
	st := s.Stats()
	if st.Refreshes != before.Refreshes+1 || st.Saves != before.Saves {
		t.Fatalf("lagging expiry: stats %+v, want one refresh and no full write", st)
	}
	refreshed, v1 := rowExpiry(t, cfg.Table)
	if v1 != v0 || refreshed <= lagged+time.Minute {
		t.Fatalf("after refresh: expiry %v (was %v), version %d (was %d)", refreshed, lagged, v1, v0)
	}

	// Changed: a full write with a new version.
	sess = get(t, s, c)
	sess.Values["n"] = 2
	save(t, s, sess)
	if _, v2 := rowExpiry(t, cfg.Table); v2 != v0+1 {
		t.Fatalf("changed Save: version %d, want %d", v2, v0+1)
	}
}

func TestSaveUnchangedRewritesWhenRowChangedElsewhere(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.RefreshAfter = -1 // every unchanged Save refreshes the expiry
	s := newStore(t, testDB.pool, cfg)
	_, c := login(t, s, map[any]any{"n": 1})
	sess := get(t, s, c)
	// Another writer replaced the row behind this store's back.
	if _, err := testDB.pool.Exec(context.Background(),
		"UPDATE "+pgx.Identifier{cfg.Table}.Sanitize()+" SET version = version + 1, data = '\\x00'"); err != nil {
		t.Fatal(err)
	}
	save(t, s, sess)
	if st := s.Stats(); st.Saves != 2 {
		t.Fatalf("stats %+v: the refresh found another version and must write in full", st)
	}
	if got := get(t, newStore(t, testDB.pool, cfg), c); got.Values["n"] != 1 {
		t.Fatalf("values %v after the full write", got.Values)
	}
}

func TestTooLargeWritesNothing(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.MaxLength = 200
	s := newStore(t, testDB.pool, cfg)
	sess, c := login(t, s, map[any]any{"small": "ok"})
	sess.Values["big"] = strings.Repeat("x", 300)
	w := httptest.NewRecorder()
	err := s.Save(request(c), w, sess)
	if !errors.Is(err, pgsession.ErrTooLarge) {
		t.Fatalf("Save: %v, want ErrTooLarge", err)
	}
	if responseCookie(t, w) != nil {
		t.Fatal("a failed Save set a cookie")
	}
	cold := newStore(t, testDB.pool, cfg)
	if got := get(t, cold, c); !reflect.DeepEqual(got.Values, map[any]any{"small": "ok"}) {
		t.Fatalf("stored values %v changed by a failed Save", got.Values)
	}
	if got := get(t, s, c); !reflect.DeepEqual(got.Values, map[any]any{"small": "ok"}) {
		t.Fatalf("cached values %v changed by a failed Save", got.Values)
	}

	// A new session that is too large gets no ID and no row.
	fresh := get(t, s, nil)
	fresh.Values["big"] = strings.Repeat("y", 300)
	if err := s.Save(request(nil), httptest.NewRecorder(), fresh); !errors.Is(err, pgsession.ErrTooLarge) || fresh.ID != "" {
		t.Fatalf("new session: err %v ID %q", err, fresh.ID)
	}
}

func TestCorruptRowIsAnErrorWithUsableSession(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := newStore(t, testDB.pool, cfg)
	_, c := login(t, s, map[any]any{"n": 1})
	if _, err := testDB.pool.Exec(context.Background(),
		"UPDATE "+pgx.Identifier{cfg.Table}.Sanitize()+" SET data = '\\x01ff', version = version + 1"); err != nil {
		t.Fatal(err)
	}
	cold := newStore(t, testDB.pool, cfg)
	got, err := cold.Get(request(c), cookieName)
	if !errors.Is(err, pgsession.ErrCorrupt) {
		t.Fatalf("Get of a corrupt row: %v, want ErrCorrupt", err)
	}
	if got == nil || !got.IsNew || len(got.Values) != 0 {
		t.Fatalf("Get of a corrupt row returned %+v, want a new empty session", got)
	}
}

func TestSaveRejectsForeignID(t *testing.T) {
	t.Parallel()
	s := newStore(t, testDB.pool, testConfig(t))
	sess := get(t, s, nil)
	sess.ID = "chosen-by-an-attacker"
	w := httptest.NewRecorder()
	if err := s.Save(request(nil), w, sess); !errors.Is(err, pgsession.ErrInvalidID) {
		t.Fatalf("Save: %v, want ErrInvalidID", err)
	}
	if responseCookie(t, w) != nil {
		t.Fatal("cookie set")
	}
}

func TestUseAfterCloseAndCloseTwice(t *testing.T) {
	t.Parallel()
	s, err := pgsession.New(context.Background(), testDB.pool, testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	_, c := login(t, s, map[any]any{"n": 1})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	got, err := s.Get(request(c), cookieName)
	if !errors.Is(err, pgsession.ErrClosed) || got == nil {
		t.Fatalf("Get after Close: %v, %v; want a session and ErrClosed", got, err)
	}
	w := httptest.NewRecorder()
	if err := s.Save(request(c), w, got); !errors.Is(err, pgsession.ErrClosed) {
		t.Fatalf("Save after Close: %v", err)
	}
	if responseCookie(t, w) != nil {
		t.Fatal("Save after Close set a cookie")
	}
	if err := testDB.pool.Ping(context.Background()); err != nil {
		t.Fatalf("Close closed the caller's pool: %v", err)
	}
}

func TestDatabaseDown(t *testing.T) {
	t.Parallel()
	url, proxy := proxiedURL(t)
	pool := newPool(t, url)
	cfg := testConfig(t)
	s := newStore(t, pool, cfg)
	sess, c := login(t, s, map[any]any{"n": 1})

	proxy.Stop()
	sess.Values["n"] = 2
	w := httptest.NewRecorder()
	if err := s.Save(request(c), w, sess); err == nil {
		t.Fatal("Save with the database down returned no error")
	}
	if responseCookie(t, w) != nil {
		t.Fatal("a failed Save set a cookie")
	}
	if v, ok := pgsession.Cached(s, sess.ID); ok && v != 1 {
		t.Fatalf("a failed Save changed the cache: version %d", v)
	}

	// A Get that must reach the database returns the error and a usable session.
	_, other := login(t, newStore(t, testDB.pool, cfg), map[any]any{"n": 9})
	got, err := s.Get(request(other), cookieName)
	if err == nil || got == nil || !got.IsNew {
		t.Fatalf("Get with the database down: %v, %v; want an error and a new session", got, err)
	}
	if st := s.Stats(); st.Errors != 2 {
		t.Fatalf("Errors = %d, want 2", st.Errors)
	}

	// The database comes back: the store works again, and nothing stored
	// before the outage was lost.
	proxy.Start()
	waitFor(t, "the pool to reconnect", func() bool { return pool.Ping(context.Background()) == nil })
	cold := newStore(t, testDB.pool, cfg)
	if got := get(t, cold, c); got.Values["n"] != 1 {
		t.Fatalf("after the outage the stored value is %v, want 1", got.Values["n"])
	}
	sess.Values["n"] = 3
	save(t, s, sess)
	if got := get(t, newStore(t, testDB.pool, cfg), c); got.Values["n"] != 3 {
		t.Fatalf("Save after recovery stored %v", got.Values["n"])
	}
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := newStore(t, testDB.pool, cfg)
	const workers, rounds = 8, 25
	goEach(t, workers, func(w int) error {
		var c *http.Cookie
		for i := range rounds {
			sess, err := s.Get(request(c), cookieName)
			if err != nil {
				return err
			}
			if c != nil && sess.Values["i"] != i-1 {
				return errors.New("read an older value than this worker wrote")
			}
			sess.Values["i"] = i
			sess.Values["w"] = w
			rec := httptest.NewRecorder()
			if err := s.Save(request(c), rec, sess); err != nil {
				return err
			}
			c = responseCookie(t, rec)
		}
		return nil
	})()
	if st := s.Stats(); st.Saves != workers*rounds {
		t.Fatalf("Saves = %d, want %d", st.Saves, workers*rounds)
	}
}

// ensure the helpers compile against the sessions.Store interface.
var _ sessions.Store = (*pgsession.Store)(nil)

func TestLogoutIsNotUndoneByARequestUnderWay(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	a, b := twoStores(t, cfg)
	_, c := login(t, a, map[any]any{"user": "ada"})
	slow := get(t, b, c) // a request on b loads the session...

	logout(t, a, c) // ...while the user logs out on a

	slow.Values["last_seen"] = "now" // the slow request then saves
	w := httptest.NewRecorder()
	err := b.Save(request(c), w, slow)
	if !errors.Is(err, pgsession.ErrDeleted) {
		t.Fatalf("Save of a session logged out meanwhile: %v, want ErrDeleted", err)
	}
	if responseCookie(t, w) != nil {
		t.Fatal("the refused Save set a cookie")
	}
	for name, s := range map[string]*pgsession.Store{"a": a, "b": b, "cold": newStore(t, testDB.pool, cfg)} {
		if got := get(t, s, c); !got.IsNew {
			t.Fatalf("%s serves the logged-out session: %v", name, got.Values)
		}
	}
	if n, _ := a.Len(context.Background()); n != 0 {
		t.Fatalf("Len = %d after logout", n)
	}
}

func TestSaveRecreatesASessionPurgedUnderIt(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := newStore(t, testDB.pool, cfg)
	_, c := login(t, s, map[any]any{"n": 1})
	sess := get(t, s, c)
	// Expiry cleanup removed the row while the request held the session:
	// unlike a logout, that must not lose the write.
	if _, err := testDB.pool.Exec(context.Background(), "DELETE FROM "+pgx.Identifier{cfg.Table}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	sess.Values["n"] = 2
	c2 := save(t, s, sess)
	if got := get(t, newStore(t, testDB.pool, cfg), c2); got.Values["n"] != 2 {
		t.Fatalf("values %v after saving over a purged row", got.Values)
	}
}
