package pgsession_test

import (
	"context"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgsession/pgsession"
)

// revocationsConfig is testConfig under CoherenceRevocations with the
// given MaxStale.
func revocationsConfig(t *testing.T, maxStale time.Duration) pgsession.Config {
	t.Helper()
	cfg := testConfig(t)
	cfg.Coherence, cfg.MaxStale = pgsession.CoherenceRevocations, maxStale
	return cfg
}

// A logout on instance A, by any of the ways to log out, is refused on
// instance B, which had the session cached, within the notification
// window: logouts are still notified under CoherenceRevocations. MaxStale
// is an hour, so B could not have dropped its copy for its age.
func TestCoherenceRevocationsLogoutReachesOtherInstance(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	logouts := map[string]func(t *testing.T, a *pgsession.Store, c *http.Cookie, table string){
		"Save with MaxAge < 0": func(t *testing.T, a *pgsession.Store, c *http.Cookie, _ string) { logout(t, a, c) },
		"Delete": func(t *testing.T, a *pgsession.Store, c *http.Cookie, _ string) {
			if err := a.Delete(ctx, get(t, a, c).ID); err != nil {
				t.Fatal(err)
			}
		},
		"LogoutUser": func(t *testing.T, a *pgsession.Store, _ *http.Cookie, _ string) {
			if n, err := a.LogoutUser(ctx, "ada"); err != nil || n != 1 {
				t.Fatalf("LogoutUser: %d, %v", n, err)
			}
		},
		"Regenerate": func(t *testing.T, a *pgsession.Store, c *http.Cookie, _ string) {
			if err := a.Regenerate(request(c), httptest.NewRecorder(), get(t, a, c)); err != nil {
				t.Fatal(err)
			}
		},
		"plain SQL": func(t *testing.T, _ *pgsession.Store, _ *http.Cookie, table string) {
			if _, err := testDB.pool.Exec(ctx, "DELETE FROM "+pgx.Identifier{table}.Sanitize()); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, op := range logouts {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := revocationsConfig(t, time.Hour)
			cfg.UserKey = "uid"
			a, b := twoStores(t, cfg)
			sess, c := login(t, a, map[any]any{"uid": "ada", "n": 1})
			if got := get(t, b, c); got.Values["n"] != 1 {
				t.Fatalf("b: %v", got.Values)
			}
			if _, ok := pgsession.Cached(b, sess.ID); !ok {
				t.Fatal("b did not cache the session")
			}
			op(t, a, c, cfg.Table)
			waitFor(t, "b to refuse the logged-out cookie", func() bool { return get(t, b, c).IsNew })
			if st := b.Stats(); st.NotifyEvictions != 1 || st.Revalidations != 0 {
				t.Fatalf("b: %d notify evictions, %d revalidations; want the notification to have evicted it", st.NotifyEvictions, st.Revalidations)
			}
		})
	}
}

// A client that changed its session on A is served the change on B at
// once, although B holds the older version and was not told: the cookie
// carries the version, and B reads a newer one from the database.
func TestCoherenceRevocationsWriterSeesOwnWriteEverywhere(t *testing.T) {
	t.Parallel()
	a, b := twoStores(t, revocationsConfig(t, time.Hour))
	sess, c1 := login(t, a, map[any]any{"n": 1})
	get(t, b, c1)
	sess.Values["n"] = 2
	c2 := save(t, a, sess)
	if v, ok := pgsession.Cached(b, sess.ID); !ok || v != 1 {
		t.Fatalf("b holds version %d (cached %v), want the old version 1 still", v, ok)
	}
	loads := b.Stats().Loads
	if got := get(t, b, c2); got.Values["n"] != 2 {
		t.Fatalf("b serves the writer %v, want n=2", got.Values)
	}
	if got := b.Stats().Loads; got != loads+1 {
		t.Fatalf("b ran %d loads, want 1", got-loads)
	}
	// B now holds version 2, which serves the older cookie too.
	if got := get(t, b, c1); got.Values["n"] != 2 {
		t.Fatalf("b serves the old cookie %v after reading version 2", got.Values)
	}
	// And B's own writes are served to their writer on B from its cache.
	sess = get(t, b, c2)
	sess.Values["n"] = 3
	c3 := save(t, b, sess)
	hits := b.Stats().CacheHits
	if got := get(t, b, c3); got.Values["n"] != 3 || b.Stats().CacheHits != hits+1 {
		t.Fatalf("b after its own write: %v, %d hits, want n=3 from the cache", got.Values, b.Stats().CacheHits-hits)
	}
}

// A client with an older cookie may be served an older version on B, but
// only until B's copy is MaxStale old on B's clock; then B reads it again.
func TestCoherenceRevocationsMaxStale(t *testing.T) {
	t.Parallel()
	const maxStale = time.Minute
	cfg := revocationsConfig(t, maxStale)
	a := newStore(t, newPool(t, testDB.url), cfg)
	clk := newClock()
	cfg.Clock = clk.Now
	b := newStore(t, newPool(t, testDB.url), cfg)

	sess, c1 := login(t, a, map[any]any{"n": 1})
	get(t, b, c1) // b loads version 1 now, on its clock
	sess.Values["n"] = 2
	save(t, a, sess)

	clk.Advance(maxStale - time.Millisecond)
	st := b.Stats()
	if got := get(t, b, c1); got.Values["n"] != 1 {
		t.Fatalf("before MaxStale: b serves %v, want the old n=1 from its cache", got.Values)
	}
	if now := b.Stats(); now.CacheHits != st.CacheHits+1 || now.Revalidations != 0 {
		t.Fatalf("before MaxStale: %+v", now)
	}

	clk.Advance(time.Millisecond) // b's copy is MaxStale old
	if got := get(t, b, c1); got.Values["n"] != 2 {
		t.Fatalf("at MaxStale: b serves %v, want n=2 read again", got.Values)
	}
	if now := b.Stats(); now.Revalidations != 1 || now.Loads != st.Loads+1 {
		t.Fatalf("at MaxStale: %d revalidations, %d loads, want 1 and 1", now.Revalidations, now.Loads-st.Loads)
	}
	// The copy read again is served from the cache for another MaxStale.
	clk.Advance(maxStale - time.Millisecond)
	hits := b.Stats().CacheHits
	if got := get(t, b, c1); got.Values["n"] != 2 || b.Stats().CacheHits != hits+1 {
		t.Fatalf("after the re-read: %v, %d hits", got.Values, b.Stats().CacheHits-hits)
	}
}

// Under CoherenceAll, MaxStale means nothing: every change is notified, so
// a copy of any age serves.
func TestCoherenceAllIgnoresMaxStale(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	clk := newClock()
	cfg.Clock, cfg.MaxStale = clk.Now, time.Second
	s := newStore(t, testDB.pool, cfg)
	_, c := login(t, s, map[any]any{"n": 1})
	clk.Advance(time.Minute)
	st := s.Stats()
	if got := get(t, s, c); got.Values["n"] != 1 {
		t.Fatal(got.Values)
	}
	if now := s.Stats(); now.CacheHits != st.CacheHits+1 || now.Revalidations != 0 || now.Loads != st.Loads {
		t.Fatalf("a copy older than MaxStale was not served under CoherenceAll: %+v", now)
	}
}

// A Save of unchanged values skips the database only while the cached
// copy is younger than MaxStale; an older one is validated by the refresh,
// which checks the version, and keeps it.
func TestCoherenceRevocationsSaveValidatesOldEntry(t *testing.T) {
	t.Parallel()
	cfg := revocationsConfig(t, time.Minute)
	clk := newClock()
	cfg.Clock = clk.Now
	s := newStore(t, testDB.pool, cfg)
	sess, c := login(t, s, map[any]any{"n": 1})

	save(t, s, sess)
	if st := s.Stats(); st.SavesSkipped != 1 || st.Refreshes != 0 {
		t.Fatalf("young copy: %d skipped, %d refreshes, want 1 and 0", st.SavesSkipped, st.Refreshes)
	}
	clk.Advance(time.Minute)
	c2 := save(t, s, sess)
	if st := s.Stats(); st.SavesSkipped != 1 || st.Refreshes != 1 || st.Saves != 1 {
		t.Fatalf("old copy: %d skipped, %d refreshes, %d saves; want it refreshed", st.SavesSkipped, st.Refreshes, st.Saves)
	}
	if v, ok := pgsession.Cached(s, sess.ID); !ok || v != 1 || c2.Value == "" {
		t.Fatalf("after the refresh: cached version %d (%v)", v, ok)
	}
	// Validated again: served, and skipped again, for another MaxStale.
	hits := s.Stats().CacheHits
	get(t, s, c)
	save(t, s, sess)
	if st := s.Stats(); st.CacheHits != hits+1 || st.SavesSkipped != 2 || st.Revalidations != 0 {
		t.Fatalf("after the refresh: %+v", st)
	}
}

// What each mode notifies, counted by a plain LISTEN on the channel:
// under CoherenceAll every write; under CoherenceRevocations only the
// logouts, single, batched and Regenerate's of the old token. The last
// write is a logout: notifications arrive in commit order, so once it
// arrived, any of the writes before it would have too.
func TestCoherenceNotifications(t *testing.T) {
	t.Parallel()
	for _, mode := range []pgsession.Coherence{pgsession.CoherenceAll, pgsession.CoherenceRevocations} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			cfg := testConfig(t)
			cfg.Coherence = mode
			// Every optional column and check, so that the fullest shape
			// of each statement runs.
			cfg.UserKey, cfg.RecordClient, cfg.AbsoluteTimeout = "uid", true, time.Hour
			other := newStore(t, testDB.pool, cfg)
			conn, err := pgx.Connect(ctx, testDB.url)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{pgsession.Channel(other)}.Sanitize()); err != nil {
				t.Fatal(err)
			}

			// Single writes: an insert, an update, an insert, then
			// Regenerate (the old token logged out, a new one inserted).
			x, _ := login(t, other, map[any]any{"n": 1})
			x.Values["n"] = 2
			save(t, other, x)
			y, cy := login(t, other, map[any]any{"n": 1})
			oldY := y.ID
			w := httptest.NewRecorder()
			if err := other.Regenerate(request(cy), w, y); err != nil {
				t.Fatal(err)
			}
			cz := responseCookie(t, w)

			// A batch of two inserts and a delete of x, behind a held insert.
			s, held, release, batches := heldStore(t, cfg)
			defer release()
			first := saveAsync(s, newSession(s, "first"))
			<-held
			p, q := saveAsync(s, newSession(s, "p")), saveAsync(s, newSession(s, "q"))
			del := make(chan error, 1)
			go func() { del <- s.Delete(ctx, x.ID) }()
			waitQueued(t, s, 3)
			release()
			for _, ch := range []<-chan saveResult{first, p, q} {
				if r := <-ch; r.err != nil {
					t.Fatal(r.err)
				}
			}
			if err := <-del; err != nil {
				t.Fatal(err)
			}
			if n := batches.n.Load(); n != 1 {
				t.Fatalf("%d batch statements, want 1", n)
			}

			// The last: a logout of the regenerated session.
			logout(t, other, cz)
			end := hex.EncodeToString(pgsession.KeyHash(y.ID)) + ":0"

			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			var writes, deletes []string
			for done := false; !done; {
				n, err := conn.WaitForNotification(wctx)
				if err != nil {
					t.Fatalf("waiting for the logout's notification: %v (writes %v, deletes %v)", err, writes, deletes)
				}
				for _, it := range strings.Fields(n.Payload)[2:] {
					key, version, _ := strings.Cut(it, ":")
					switch {
					case key == strings.Repeat("0", 64): // a probe
					case version == "0":
						deletes = append(deletes, key)
					default:
						writes = append(writes, it)
					}
					done = done || it == end
				}
			}
			wantWrites := 7 // x twice, y, y's new token, first, p, q
			if mode == pgsession.CoherenceRevocations {
				wantWrites = 0
			}
			if len(writes) != wantWrites {
				t.Errorf("%d writes notified, want %d: %v", len(writes), wantWrites, writes)
			}
			wantDeletes := []string{ // Regenerate's old token, the batched Delete, the logout
				hex.EncodeToString(pgsession.KeyHash(oldY)),
				hex.EncodeToString(pgsession.KeyHash(x.ID)),
				hex.EncodeToString(pgsession.KeyHash(y.ID)),
			}
			if strings.Join(deletes, " ") != strings.Join(wantDeletes, " ") {
				t.Errorf("deletes notified %v, want %v", deletes, wantDeletes)
			}
		})
	}
}
