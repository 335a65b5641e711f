package pgsession_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgsession/pgsession"
)

// gateTracer holds the store's load query after it has read its row, until
// released: the moment a concurrent write or delete can slip in.
type gateTracer struct {
	mu      sync.Mutex
	armed   bool
	reached chan struct{}
	release chan struct{}
}

type gateKey struct{}

// TestFillRace: a database read that started before a delete must not put
// the deleted session into the cache after the delete.
func TestFillRace(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	writer := newStore(t, testDB.pool, cfg)
	sess, c := login(t, writer, map[any]any{"user": "ada"})

	gate := &gateTracer{}
	pcfg, err := pgxpool.ParseConfig(testDB.url)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.ConnConfig.Tracer = gate
	s := newStore(t, newPoolConfig(t, pcfg), cfg)

	gate.arm()
	done := make(chan error, 1)
	go func() {
		_, err := s.Get(request(c), cookieName) // reads the row, then waits at the gate
		done <- err
	}()
	<-gate.reached

	// Log out through the same store while its read is in flight.
	logout := get(t, writer, c)
	logout.Options.MaxAge = -1
	if err := s.Save(request(c), httptest.NewRecorder(), logout); err != nil {
		t.Fatal(err)
	}
	close(gate.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, ok := pgsession.Cached(s, sess.ID); ok {
		t.Fatal("the read that raced the delete put the deleted session into the cache")
	}
	if got := get(t, s, c); !got.IsNew {
		t.Fatal("a logged-out session was served")
	}
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

func (g *gateTracer) arm() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.armed = true
	g.reached = make(chan struct{})
	g.release = make(chan struct{})
}

func (g *gateTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	return context.WithValue(ctx, gateKey{}, strings.HasPrefix(d.SQL, "SELECT data, version"))
}

func (g *gateTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	if isLoad, _ := ctx.Value(gateKey{}).(bool); !isLoad {
		return
	}
	g.mu.Lock()
	armed := g.armed
	g.armed = false
	reached, release := g.reached, g.release
	g.mu.Unlock()
	if armed {
		close(reached)
		<-release
	}
}

// TestReplayedLogoutCookieIsCheap: a validly signed cookie of a logged-out
// session must not cost a query per request, on any instance, or anyone
// holding one old cookie could make every request a database read.
func TestReplayedLogoutCookieIsCheap(t *testing.T) {
	t.Parallel()
	a, b := twoStores(t, testConfig(t))
	sess, c := login(t, a, map[any]any{"user": "ada"})
	get(t, b, c) // b caches it
	id := sess.ID
	sess.Options.MaxAge = -1
	save(t, a, sess)
	waitFor(t, "b to evict the logged-out session", func() bool { return b.Stats().NotifyEvictions == 1 })

	for _, s := range []*pgsession.Store{a, b} {
		before := s.Stats().Loads
		for i := range 200 {
			if got := get(t, s, c); !got.IsNew || len(got.Values) != 0 {
				t.Fatalf("replay %d served the logged-out session: %v", i, got.Values)
			}
		}
		if loads := s.Stats().Loads - before; loads > 5 {
			t.Fatalf("200 replays of a logged-out cookie cost %d loads, want at most 5", loads)
		}
	}
	// Remembering the dead never refuses the living: a new login works on
	// both, and a save through the stale session is still refused.
	_, fresh := login(t, b, map[any]any{"user": "ada"})
	if got := get(t, a, fresh); got.IsNew || got.Values["user"] != "ada" {
		t.Fatalf("a new login after the logout: %v", got.Values)
	}
	stale := get(t, a, c)
	stale.ID = id
	stale.Values["user"] = "mallory"
	if err := a.Save(request(c), httptest.NewRecorder(), stale); !errors.Is(err, pgsession.ErrDeleted) {
		t.Fatalf("save over the logged-out session: %v, want ErrDeleted", err)
	}
}

// heapAfterGC returns the live heap after a full collection.
func heapAfterGC() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestCacheBytesBoundsMemory: 3,000 sessions of 60 KiB (180 MB) with a
// 32 MiB budget keep the cache within it, and every session still loads.
// Not parallel: it measures the heap.
func TestCacheBytesBoundsMemory(t *testing.T) {
	cfg := testConfig(t)
	cfg.CacheBytes = 32 << 20
	s := newStore(t, newPool(t, testDB.url), cfg)
	big := strings.Repeat("x", 60<<10)
	before := heapAfterGC()
	cookies := make([]*http.Cookie, 3000)
	for i := range cookies {
		_, cookies[i] = login(t, s, map[any]any{"i": i, "big": big})
	}
	grown := int64(heapAfterGC()) - int64(before)
	st := s.Stats()
	t.Logf("heap grew %d MiB for %d cached entries, %d MiB counted", grown>>20, st.Entries, st.CacheBytes>>20)
	if st.CacheBytes > cfg.CacheBytes || grown > 40<<20 {
		t.Fatalf("cache counts %d bytes, heap grew %d: want both within ~%d", st.CacheBytes, grown, cfg.CacheBytes)
	}
	for i, c := range cookies {
		if got := get(t, s, c); got.IsNew || got.Values["i"] != i {
			t.Fatalf("session %d does not load", i)
		}
	}
}

// TestCacheKeepsNoRequestHeader: a cached session must not pin the
// request's Cookie header, however long it is. Not parallel: it measures
// the heap.
func TestCacheKeepsNoRequestHeader(t *testing.T) {
	cfg := testConfig(t)
	s := newStore(t, newPool(t, testDB.url), cfg)
	const n = 2000
	cookies := make([]*http.Cookie, n)
	for i := range cookies {
		_, cookies[i] = login(t, s, map[any]any{"i": i})
	}
	s2 := newStore(t, newPool(t, testDB.url), cfg) // an instance that caches them on Get
	before := heapAfterGC()
	for _, c := range cookies {
		r := request(c)
		// 4 KiB of other cookies in the same header, unique to the request.
		r.Header.Set("Cookie", r.Header.Get("Cookie")+"; other="+strings.Repeat(fmt.Sprint(c.Value[:8]), 512))
		if got, err := s2.Get(r, cookieName); err != nil || got.IsNew {
			t.Fatalf("Get: %v", err)
		}
	}
	grown := int64(heapAfterGC()) - int64(before)
	perEntry := grown / n
	t.Logf("%d bytes of heap per cached entry", perEntry)
	if st := s2.Stats(); st.Entries != n {
		t.Fatalf("%d entries cached, want %d", st.Entries, n)
	}
	if perEntry > 1024 {
		t.Fatalf("each cached entry holds %d bytes of heap: the 4 KiB request header is kept", perEntry)
	}
}
