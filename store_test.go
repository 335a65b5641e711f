package pgsession_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gorilla/sessions"
	"github.com/jackc/pgx/v5"

	"github.com/pgsession/pgsession"
)

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

func bytesHex(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

func TestMissingOrExpiredIsNewSession(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	clk := newClock()
	cfg.Clock = clk.Now
	s := newStore(t, testDB.pool, cfg)
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
	cfg.Clock = clk.Now
	s := newStore(t, testDB.pool, cfg)
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

// checkPrefixOnce checks that err names its operation once, in front: one
// prefix per layer, never "delete session: write session: ...".
func checkPrefixOnce(t *testing.T, err error, prefix string) {
	t.Helper()
	msg := err.Error()
	if !strings.HasPrefix(msg, prefix) || strings.Count(msg, " session: ") != 1 {
		t.Errorf("error %q: want the prefix %q once and no other operation", msg, prefix)
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
	err := s.Save(request(c), w, sess)
	if err == nil {
		t.Fatal("Save with the database down returned no error")
	}
	checkPrefixOnce(t, err, "save session: ")
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
	checkPrefixOnce(t, err, "load session: ")
	del := get(t, newStore(t, testDB.pool, cfg), c)
	del.Options.MaxAge = -1
	err = s.Save(request(c), httptest.NewRecorder(), del)
	if err == nil {
		t.Fatal("a logout with the database down returned no error")
	}
	checkPrefixOnce(t, err, "delete session: ")
	if st := s.Stats(); st.Errors != 3 {
		t.Fatalf("Errors = %d, want 3", st.Errors)
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

// TestCloseStopsEverything runs alone (not in parallel), so that goleak sees
// only this store's goroutines: the listener, its hand-off, the scavenger
// and the purger must all be gone after Close, and the pool must still work.
func TestCloseStopsEverything(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	pool := newPool(t, testDB.url)
	cfg := testConfig(t)
	cfg.ScavengeInterval = 10 * time.Millisecond // the shortest allowed
	cfg.PurgeInterval = 10 * time.Millisecond
	cfg.ListenLease = 200 * time.Millisecond // pings every 50 ms
	s, err := pgsession.New(context.Background(), pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, c := login(t, s, map[any]any{"n": 1})
	get(t, s, c)
	waitFor(t, "the background loops to run", func() bool {
		st := s.Stats()
		return st.PurgeRuns > 0 && pgsession.ScavengeRuns(s) > 0
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pool.Ping(context.Background()); err != nil {
		t.Fatalf("Close closed the caller's pool: %v", err)
	}
	pool.Close()
	goleak.VerifyNone(t, ignore)
}

// An unchanged Save that shortens MaxAge must shorten the row's expiry.
func TestUnchangedSaveWithShorterMaxAgeWrites(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := newStore(t, testDB.pool, cfg)
	_, c := login(t, s, map[any]any{"user": "ada"})
	sess := get(t, s, c)
	sess.Options.MaxAge = 3600
	save(t, s, sess)
	var left time.Duration
	err := testDB.pool.QueryRow(context.Background(),
		`SELECT (extract(epoch FROM expires_at - now()) * 1e6)::bigint * 1000 FROM `+pgx.Identifier{cfg.Table}.Sanitize()).Scan(&left)
	if err != nil {
		t.Fatal(err)
	}
	if left > time.Hour || left < 59*time.Minute {
		t.Fatalf("Save with MaxAge 1h left the row alive for another %v", left.Round(time.Minute))
	}
	if st := s.Stats(); st.SavesSkipped != 0 || st.Saves != 2 {
		t.Fatalf("stats %+v: want a full write, so other instances hear of it", st)
	}
}

// A plain-SQL UPDATE of data that keeps the version (a migration) is
// evicted by the trigger's notification (one key, or the clear item past
// 1,000 rows). An unchanged Save on the same instance that peeked the
// entry just before the eviction refreshes the expiry (WHERE version = $2
// still matches) and caches the pre-migration data after the eviction;
// every later unchanged Save refreshes it again, so the instance serves the
// old data for as long as the user stays active.
//
// Seams: the store's Clock is called right before the fast path's peek; it
// releases the apply hook, which lets the trigger's notification be applied
// a few µs later, inside the window between peek and cache.begin.
func TestUnchangedSaveDoesNotRecacheAnEvictedEntry(t *testing.T) {
	t.Parallel()
	for _, bulk := range []bool{false, true} {
		t.Run(map[bool]string{false: "one row", true: "1001 rows"}[bulk], func(t *testing.T) { refreshRace(t, bulk) })
	}
}

func refreshRace(t *testing.T, bulk bool) {
	var armed, clockArmed atomic.Bool
	release := make(chan struct{}, 1)
	hookDone := make(chan bool, 1) // true: released by the Save's clock
	var spin atomic.Int64
	cfg := testConfig(t)
	cfg.RefreshAfter = -1                            // every unchanged Save refreshes the expiry
	cfg.ScavengeInterval, cfg.PurgeInterval = -1, -1 // nothing else calls the clock
	cfg.Clock = func() time.Time {
		if clockArmed.Load() {
			select {
			case release <- struct{}{}:
			default:
			}
		}
		return time.Now()
	}
	cfg = pgsession.WithHandoff(cfg, 0, func() {
		if armed.CompareAndSwap(true, false) {
			clockArmed.Store(true)
			released := false
			select {
			case <-release:
				released = true
			case <-time.After(time.Second):
			}
			clockArmed.Store(false)
			for end := time.Now().Add(time.Duration(spin.Load())); time.Now().Before(end); {
			}
			hookDone <- released
		}
	})
	a := newStore(t, testDB.pool, cfg)
	truth := newStore(t, testDB.pool, pgsession.Config{KeyPairs: cfg.KeyPairs, Table: cfg.Table, CacheSize: -1})
	pad := strings.Repeat("x", 60000) // a larger session widens peek..begin (bytes.Equal)
	sess, c := login(t, a, map[any]any{"user": "ada", "pad": pad})
	other, _ := login(t, truth, map[any]any{"user": "grace", "pad": pad})
	table := pgx.Identifier{cfg.Table}.Sanitize()
	migration := "UPDATE " + table + " SET data = (SELECT data FROM " + table + " WHERE key_hash = $2) WHERE key_hash = $1"
	if bulk {
		sqlExec(t, "INSERT INTO "+table+" (key_hash, data, expires_at) SELECT sha256(i::text::bytea), '\\x', now() + interval '1 hour' FROM generate_series(1, 1000) i")
		migration = "UPDATE " + table + " SET data = CASE WHEN key_hash = $1 THEN (SELECT data FROM " + table + " WHERE key_hash = $2) ELSE data END"
	}
	saveAda := func() error {
		s := sessions.NewSession(a, cookieName)
		s.ID, s.IsNew, s.Options = sess.ID, false, &sessions.Options{Path: "/", MaxAge: 3600}
		s.Values["user"], s.Values["pad"] = "ada", pad
		return a.Save(request(nil), httptest.NewRecorder(), s)
	}
	user := func(st *pgsession.Store) any { return get(t, st, c).Values["user"] }
	hits := 0
	for attempt := 0; attempt < 60; attempt++ {
		spin.Store(int64(attempt%20) * int64(500*time.Nanosecond))
		if err := saveAda(); err != nil { // a caches ada at the row's version
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // its echo applied
		armed.Store(true)
		sqlExec(t, migration, keyOf(t, sess.ID), keyOf(t, other.ID)) // new data, same version
		time.Sleep(5 * time.Millisecond)                             // its notification waits in the hook
		if err := saveAda(); err != nil {
			t.Fatal(err)
		}
		released := <-hookDone
		time.Sleep(20 * time.Millisecond) // the notification has been applied
		if !released {
			continue
		}
		if db, got := user(truth), user(a); db != got {
			for range 5 { // the user stays active, unchanged
				time.Sleep(200 * time.Millisecond)
				if err := saveAda(); err != nil {
					t.Fatal(err)
				}
			}
			t.Fatalf("attempt %d: the database holds %v, instance a serves %v; a second and 5 Saves later: database %v, a %v",
				attempt, db, got, user(truth), user(a))
		}
		hits++
	}
	t.Logf("%d attempts, no stale read", hits)
}
