package pgsession_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/sessions"
	"github.com/jackc/pgx/v5"

	"github.com/pgsession/pgsession"
)

// twoStores opens two Stores on one table, each on its own pool, as two
// application instances would.
func twoStores(t *testing.T, cfg pgsession.Config) (a, b *pgsession.Store) {
	t.Helper()
	a = newStore(t, newPool(t, testDB.url), cfg)
	b = newStore(t, newPool(t, testDB.url), cfg)
	return a, b
}

func TestChangeOnOneInstanceEvictsOnAnother(t *testing.T) {
	t.Parallel()
	a, b := twoStores(t, testConfig(t))
	sess, oldCookie := login(t, a, map[any]any{"n": 1})
	if got := get(t, b, oldCookie); got.Values["n"] != 1 {
		t.Fatalf("b: %v", got.Values)
	}
	if _, ok := pgsession.Cached(b, sess.ID); !ok {
		t.Fatal("b did not cache the session")
	}

	sess.Values["n"] = 2
	save(t, a, sess)
	// b learns of the change only through the notification: the old
	// cookie carries the old version, so it cannot tell b to reload.
	waitFor(t, "b to evict the changed session", func() bool { return b.Stats().NotifyEvictions == 1 })
	if got := get(t, b, oldCookie); got.Values["n"] != 2 {
		t.Fatalf("b after the change: %v, want n=2", got.Values)
	}

	sess.Options.MaxAge = -1
	save(t, a, sess)
	waitFor(t, "b to evict the deleted session", func() bool { return b.Stats().NotifyEvictions == 2 })
	if got := get(t, b, oldCookie); !got.IsNew {
		t.Fatalf("b serves a logged-out session: %v", got.Values)
	}
}

// TestSchemaSpellingsShareAChannel: Schema "" (through search_path) and
// Schema "public" reach one table, so they must hear each other.
func TestSchemaSpellingsShareAChannel(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	a := newStore(t, newPool(t, testDB.url), cfg)
	cfg.Schema = "public"
	b := newStore(t, newPool(t, testDB.url), cfg)
	if pgsession.Channel(a) != pgsession.Channel(b) {
		t.Fatalf("channels differ: %q and %q", pgsession.Channel(a), pgsession.Channel(b))
	}
	sess, oldCookie := login(t, a, map[any]any{"n": 1})
	get(t, b, oldCookie)
	sess.Values["n"] = 2
	save(t, a, sess)
	waitFor(t, "b to evict the changed session", func() bool { return b.Stats().NotifyEvictions == 1 })
	if got := get(t, b, oldCookie); got.Values["n"] != 2 {
		t.Fatalf("b after the change: %v, want n=2", got.Values)
	}
}

func TestOwnEchoDoesNotEvict(t *testing.T) {
	t.Parallel()
	a, b := twoStores(t, testConfig(t))
	sess, c := login(t, b, map[any]any{"n": 1})
	for i := 2; i <= 5; i++ {
		sess.Values["n"] = i
		c = save(t, b, sess)
	}
	waitFor(t, "b to hear its own writes", func() bool { return b.Stats().Notifications == 5 })
	waitFor(t, "a to hear b's writes", func() bool { return a.Stats().Notifications == 5 })
	st := b.Stats()
	if st.NotifyEvictions != 0 {
		t.Fatalf("b's own echoes evicted %d entries", st.NotifyEvictions)
	}
	if v, ok := pgsession.Cached(b, sess.ID); !ok || v != 5 {
		t.Fatalf("b's cached version %d (cached %v), want 5", v, ok)
	}
	get(t, b, c)
	if got := b.Stats(); got.CacheHits != st.CacheHits+1 || got.Loads != st.Loads {
		t.Fatalf("read after own writes was not a cache hit: %+v", got)
	}
}

func TestNotificationCarriesHashNotToken(t *testing.T) {
	t.Parallel()
	s := newStore(t, testDB.pool, testConfig(t))
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testDB.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{pgsession.Channel(s)}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	sess, _ := login(t, s, map[any]any{"n": 1})
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := conn.WaitForNotification(wctx)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(sess.ID)
	sum := sha256.Sum256(raw)
	want := fmt.Sprintf("1 %s %s:1", pgsession.Origin(s), hex.EncodeToString(sum[:]))
	if n.Payload != want {
		t.Fatalf("payload %q, want %q", n.Payload, want)
	}
	if strings.Contains(n.Payload, sess.ID) || strings.Contains(n.Payload, hex.EncodeToString(raw)) {
		t.Fatal("payload carries the token")
	}
	if ch := pgsession.Channel(s); ch != strings.ToLower(ch) {
		t.Fatalf("channel %q is not lower case", ch)
	}
}

// TestNotifyAcceptsTheLargestSplit: PostgreSQL takes the largest payload
// the store renders (TestPayloadsSplitBelowLimit checks the split itself).
func TestNotifyAcceptsTheLargestSplit(t *testing.T) {
	t.Parallel()
	requireDB(t)
	ps := pgsession.Payloads("0123456789abcdef", 500)
	largest := ""
	for _, p := range ps {
		if len(p) > len(largest) {
			largest = p
		}
	}
	if _, err := testDB.pool.Exec(context.Background(), "SELECT pg_notify('pgsession_split_test', $1)", largest); err != nil {
		t.Fatalf("pg_notify of a %d-byte payload: %v", len(largest), err)
	}
}

func TestMonotonicReadsThroughCookieVersion(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	a := newStore(t, newPool(t, testDB.url), cfg)
	// b's applier is held, so it never applies a's notifications: only the
	// version in the cookie can tell it its copy is old. (Its listener still
	// hears its own probes, so its cache serves.)
	release := make(chan struct{})
	b := newStore(t, newPool(t, testDB.url), pgsession.WithHandoff(cfg, 4096, func() { <-release }))
	t.Cleanup(func() { close(release) }) // before b's Close

	sess, c1 := login(t, a, map[any]any{"n": 1})
	get(t, b, c1) // cached at version 1
	sess.Values["n"] = 2
	c2 := save(t, a, sess)
	if got := get(t, b, c2); got.Values["n"] != 2 {
		t.Fatalf("b served n=%v to a client that was given version 2", got.Values["n"])
	}
}

func TestListenerKilledUnderLoad(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	a, b := twoStores(t, cfg)
	ctx := context.Background()

	const clients = 6
	type client struct {
		sess  *sessionHandle
		acked atomic.Int64
	}
	cs := make([]*client, clients)
	for i := range cs {
		s, c := login(t, a, map[any]any{"n": 0})
		cs[i] = &client{sess: &sessionHandle{s: s, cookie: c}}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var stale, errs atomic.Int64
	for _, cl := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := int64(1); ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				cl.sess.s.Values["n"] = int(n)
				w := httptest.NewRecorder()
				if err := a.Save(request(nil), w, cl.sess.s); err != nil {
					errs.Add(1)
					continue
				}
				cl.acked.Store(n)
				cookie := responseCookie(t, w)
				// Read on the other instance with the newest cookie: never older.
				got, err := b.Get(request(cookie), cookieName)
				if err != nil {
					errs.Add(1)
					continue
				}
				if v, _ := got.Values["n"].(int); int64(v) < n {
					stale.Add(1)
				}
			}
		}()
	}

	name := pgsession.ListenerName(b)
	for kill := 1; kill <= 4; kill++ {
		before := b.Stats().ListenerReconnects
		var killed int
		err := testDB.pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE application_name = $1`, name).Scan(&killed)
		if err != nil || killed != 1 {
			t.Fatalf("kill %d: terminated %d listeners, err %v", kill, killed, err)
		}
		waitFor(t, "the listener to reconnect", func() bool {
			st := b.Stats()
			return st.ListenerReconnects > before && st.Listener == pgsession.ListenerUp
		})
	}
	close(stop)
	wg.Wait()

	st := b.Stats()
	if st.ListenerReconnects != 4 || st.CacheDrops != 4 {
		t.Fatalf("reconnects %d, cache drops %d; want 4 and 4", st.ListenerReconnects, st.CacheDrops)
	}
	if stale.Load() != 0 || errs.Load() != 0 {
		t.Fatalf("%d stale reads and %d errors under listener kills", stale.Load(), errs.Load())
	}
	// Nothing acknowledged was lost, and b converges on it through
	// notifications alone (the login cookie carries version 1).
	for _, cl := range cs {
		want := cl.acked.Load()
		waitFor(t, "b to serve the last acknowledged write", func() bool {
			v, _ := get(t, b, cl.sess.cookie).Values["n"].(int)
			return int64(v) == want
		})
		if v, _ := get(t, newStore(t, testDB.pool, cfg), cl.sess.cookie).Values["n"].(int); int64(v) != want {
			t.Fatalf("stored n=%d, last acknowledged %d", v, want)
		}
	}
}

type sessionHandle struct {
	s      *sessions.Session
	cookie *http.Cookie
}

func TestSilentListenerConnection(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	url, proxy := proxiedURL(t)
	cfg.ListenConnString = url
	cfg.ListenLease = 400 * time.Millisecond
	logs := &logCounter{}
	cfg.Logger = slog.New(logs)
	s := newStore(t, testDB.pool, cfg)
	_, c := login(t, s, map[any]any{"n": 1})
	get(t, s, c)
	if st := s.Stats(); st.CacheHits != 1 || st.Listener != pgsession.ListenerUp {
		t.Fatalf("before the silence: %+v", st)
	}

	proxy.Pause()
	waitFor(t, "the lease to run out", func() bool { return s.Stats().Listener == pgsession.ListenerDown })
	before := s.Stats()
	get(t, s, c)
	if st := s.Stats(); st.Loads != before.Loads+1 || st.CacheHits != before.CacheHits {
		t.Fatalf("with a silent listener a read was served from the cache: %+v", st)
	}

	// Several probes went unheard; the loss of proof is said once.
	waitFor(t, "the outage to be logged", func() bool { return logs.count(slog.LevelWarn, "bypass the cache") > 0 })
	waitFor(t, "a reconnect to fail", func() bool { return logs.count(slog.LevelDebug, "reconnect failed") > 0 })
	if n := logs.count(slog.LevelWarn, "bypass the cache"); n != 1 {
		t.Fatalf("%d warnings in one outage, want 1", n)
	}
	proxy.Resume()
	waitFor(t, "the listener to recover", func() bool {
		st := s.Stats()
		return st.Listener == pgsession.ListenerUp && st.ListenerReconnects >= 1
	})
	get(t, s, c) // fills the dropped cache
	before = s.Stats()
	get(t, s, c)
	if st := s.Stats(); st.CacheHits != before.CacheHits+1 {
		t.Fatalf("after recovery the cache does not serve: %+v", st)
	}
	if st := s.Stats(); st.ListenerDowntime <= 0 {
		t.Fatalf("ListenerDowntime = %v after an outage", st.ListenerDowntime)
	}
}

func TestRandomizedTwoStoreWorkload(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	a, b := twoStores(t, cfg)
	stores := []*pgsession.Store{a, b}
	// Each client writes on a random instance and reads on a random one,
	// always presenting its newest cookie: it must never read older than
	// it wrote.
	var stale atomic.Int64
	goEach(t, 8, func(int) error {
		var c *http.Cookie
		last := 0
		for i := 1; i <= 40; i++ {
			sess, err := stores[rand.IntN(2)].Get(request(c), cookieName)
			if err != nil {
				return err
			}
			if v, _ := sess.Values["n"].(int); v < last {
				stale.Add(1)
			}
			if rand.IntN(3) == 0 {
				continue
			}
			sess.Values["n"] = i
			w := httptest.NewRecorder()
			if err := stores[rand.IntN(2)].Save(request(c), w, sess); err != nil {
				return err
			}
			c, last = responseCookie(t, w), i
		}
		return nil
	})()
	if stale.Load() != 0 {
		t.Fatalf("%d stale reads", stale.Load())
	}
}

func TestGarbageNotificationsAreCountedAndIgnored(t *testing.T) {
	t.Parallel()
	s := newStore(t, testDB.pool, testConfig(t))
	_, c := login(t, s, map[any]any{"n": 1})
	for _, p := range []string{"", "hello", "1 x zz:1", "1 x " + strings.Repeat("ab", 32) + ":-3"} {
		if _, err := testDB.pool.Exec(context.Background(), "SELECT pg_notify($1, $2)", pgsession.Channel(s), p); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the garbage to be counted", func() bool { return s.Stats().BadNotifications == 4 })
	before := s.Stats()
	if got := get(t, s, c); got.Values["n"] != 1 {
		t.Fatalf("values %v", got.Values)
	}
	if st := s.Stats(); st.CacheHits != before.CacheHits+1 || st.Listener != pgsession.ListenerUp {
		t.Fatalf("after garbage the store does not serve from its cache: %+v", st)
	}
}

// TestHandoffOverflowDropsTheCache: when notifications arrive faster than
// they are applied, the read loop must not block and must not drop a
// notification: it drops the whole cache.
func TestHandoffOverflowDropsTheCache(t *testing.T) {
	t.Parallel()
	hold := make(chan struct{})
	held := make(chan struct{}, 1)
	cfg := pgsession.WithHandoff(testConfig(t), 2, func() {
		select {
		case held <- struct{}{}:
		default:
		}
		<-hold
	})
	s := newStore(t, newPool(t, testDB.url), cfg)
	t.Cleanup(func() {
		select {
		case <-hold:
		default:
			close(hold)
		}
	})
	_, c := login(t, s, map[any]any{"n": 1})
	get(t, s, c)
	noise := func() {
		if _, err := testDB.pool.Exec(context.Background(), "SELECT pg_notify($1, 'noise')", pgsession.Channel(s)); err != nil {
			t.Fatal(err)
		}
	}
	noise() // holds the applier (the store's own echoes do not reach it)
	<-held
	if st := s.Stats(); st.Entries != 1 {
		t.Fatalf("entries %d before the burst", st.Entries)
	}
	// Three more while the applier is held: two fit, the rest overflow.
	for range 3 {
		noise()
	}
	waitFor(t, "the overflow to drop the cache", func() bool { return s.Stats().CacheDrops >= 1 })
	if st := s.Stats(); st.Entries != 0 || st.Listener != pgsession.ListenerUp {
		t.Fatalf("after the overflow: %+v; want an empty cache and the listener still up", st)
	}
	close(hold)
	waitFor(t, "the held notifications to be applied", func() bool { return s.Stats().BadNotifications >= 2 })
}

// TestNotifyQueueUsageRises: a listener elsewhere that sits in an open
// transaction holds the cluster's notification queue; the store's Stats
// show the queue filling (sampled with every probe).
func TestNotifyQueueUsageRises(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.ListenLease = 400 * time.Millisecond // a probe every 100 ms
	s := newStore(t, newPool(t, testDB.url), cfg)
	ctx := context.Background()
	stuck, err := pgx.Connect(ctx, testDB.url)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close(ctx)
	if _, err := stuck.Exec(ctx, "LISTEN pgsession_stuck_listener"); err != nil {
		t.Fatal(err)
	}
	tx, err := stuck.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	// 2,000 notifications of 1 KiB: about 250 queue pages the stuck
	// listener will not let go.
	if _, err := testDB.pool.Exec(ctx, `SELECT pg_notify('pgsession_queue_filler', repeat('x', 1024) || g)
		FROM generate_series(1, 2000) g`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "NotifyQueueUsage to rise", func() bool { return s.Stats().NotifyQueueUsage > 0 })
	t.Logf("NotifyQueueUsage %g with a listener stuck in a transaction", s.Stats().NotifyQueueUsage)
}
