package pgsession_test

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
)

// listeningConnections counts the connections named like the store's
// listening connection.
func listeningConnections(t *testing.T, name string) int {
	t.Helper()
	var n int
	err := testDB.pool.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, name).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// listeningThrough returns the configs of two Stores on tables of their
// own that listen through url, with the leases given.
func listeningThrough(t *testing.T, url string, leaseA, leaseB time.Duration) (a, b pgsession.Config) {
	t.Helper()
	a, b = testConfig(t), testConfig(t)
	a.ListenConnString, b.ListenConnString = url, url
	a.ListenLease, b.ListenLease = leaseA, leaseB
	return a, b
}

// TestStoresOnOnePoolShareOneListener: two Stores of one process on one
// pool, on two tables, hold one listening connection between them; both
// stay coherent with another instance, and closing one leaves the other
// working.
func TestStoresOnOnePoolShareOneListener(t *testing.T) {
	t.Parallel()
	cfg1, cfg2 := testConfig(t), testConfig(t)
	pool, other := newPool(t, testDB.url), newPool(t, testDB.url)
	a := newStore(t, pool, cfg1) // this process: two tables
	b := newStore(t, pool, cfg2)
	a2 := newStore(t, other, cfg1) // another instance of both
	b2 := newStore(t, other, cfg2)
	if pgsession.Channel(a) == pgsession.Channel(b) {
		t.Fatalf("both tables notify channel %q", pgsession.Channel(a))
	}
	name := pgsession.ListenerName(a)
	if got := pgsession.ListenerName(b); got != name {
		t.Fatalf("stores on one pool listen on %q and %q", name, got)
	}
	if pgsession.ListenerName(a2) == name {
		t.Fatal("a store on another pool shares the listener")
	}
	if n := listeningConnections(t, name); n != 1 {
		t.Fatalf("%d listening connections for two stores on one pool, want 1", n)
	}

	// changeSeen checks that a change made on w reaches r's cache.
	changeSeen := func(what string, r, w *pgsession.Store) {
		t.Helper()
		sess, c := login(t, w, map[any]any{"n": 1})
		get(t, r, c) // r caches version 1
		if _, ok := pgsession.Cached(r, sess.ID); !ok {
			t.Fatalf("%s: not cached after a Get", what)
		}
		sess.Values["n"] = 2
		save(t, w, sess)
		waitFor(t, what+": the change to evict the cached copy", func() bool {
			_, ok := pgsession.Cached(r, sess.ID)
			return !ok
		})
	}
	changeSeen("table 1", a, a2)
	changeSeen("table 2", b, b2)

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	changeSeen("table 2 after the other store closed", b, b2)
	if st := b.Stats(); st.Listener != pgsession.ListenerUp || st.ListenerReconnects != 0 {
		t.Fatalf("after the other store closed: listener %v, %d reconnects", st.Listener, st.ListenerReconnects)
	}
	if n := listeningConnections(t, name); n != 1 {
		t.Fatalf("%d listening connections after one store closed, want 1", n)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the listening connection to end with the last store", func() bool {
		return listeningConnections(t, name) == 0
	})
}

// TestSharedListenerLost: when the shared connection dies, every store on
// it reconnects and serves again, its cache dropped.
func TestSharedListenerLost(t *testing.T) {
	t.Parallel()
	cfg1, cfg2 := testConfig(t), testConfig(t)
	pool := newPool(t, testDB.url)
	a, b := newStore(t, pool, cfg1), newStore(t, pool, cfg2)
	_, ca := login(t, a, map[any]any{"n": 1})
	_, cb := login(t, b, map[any]any{"n": 1})

	var killed int
	err := testDB.pool.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1`, pgsession.ListenerName(a)).Scan(&killed)
	if err != nil || killed != 1 {
		t.Fatalf("terminated %d listening connections, err %v", killed, err)
	}
	for _, s := range []*pgsession.Store{a, b} {
		waitFor(t, "the listener to reconnect", func() bool {
			st := s.Stats()
			return st.Listener == pgsession.ListenerUp && st.ListenerReconnects == 1 && st.CacheDrops >= 1
		})
	}
	get(t, a, ca)
	get(t, b, cb)
	before := a.Stats().CacheHits + b.Stats().CacheHits
	get(t, a, ca)
	get(t, b, cb)
	if after := a.Stats().CacheHits + b.Stats().CacheHits; after != before+2 {
		t.Fatalf("after the reconnect %d of 2 Gets were cache hits", after-before)
	}
}

// TestSlowStoreDoesNotHangUpTheOthers: a Store whose listener falls behind
// its lease (here its applier is held) stays DOWN itself, but does not
// hang up the connection it shares with a healthy Store.
func TestSlowStoreDoesNotHangUpTheOthers(t *testing.T) {
	t.Parallel()
	cfgA, cfgB := testConfig(t), testConfig(t)
	var armed atomic.Bool
	hold := make(chan struct{})
	cfgA = pgsession.WithHandoff(cfgA, 1000, func() {
		if armed.Load() {
			<-hold
		}
	})
	cfgA.ListenLease = 400 * time.Millisecond
	logs := &logCounter{}
	cfgA.Logger = slog.New(logs)
	pool := newPool(t, testDB.url)
	a := newStore(t, pool, cfgA)
	b := newStore(t, pool, cfgB)      // the default lease, nothing wrong with it
	t.Cleanup(func() { close(hold) }) // runs before the stores close
	pid := func() (pid int) {
		t.Helper()
		err := testDB.pool.QueryRow(context.Background(), `SELECT pid FROM pg_stat_activity WHERE application_name = $1`,
			pgsession.ListenerName(b)).Scan(&pid)
		if err != nil {
			t.Fatal(err)
		}
		return pid
	}
	before := pid()

	// Another instance's notification blocks A's applier: A's probes
	// queue behind it, and A's lease runs out.
	armed.Store(true)
	if _, err := testDB.pool.Exec(context.Background(), "SELECT pg_notify($1, 'noise')", pgsession.Channel(a)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "A to lose its proof", func() bool { return logs.count(slog.LevelWarn, "heard no probe within the lease") > 0 })
	// A's prober asks for a hang-up every quarter lease from now on:
	// watch ten of them.
	for end := time.Now().Add(10 * cfgA.ListenLease / 4); time.Now().Before(end); {
		if st := b.Stats(); st.Listener != pgsession.ListenerUp || st.ListenerReconnects != 0 {
			t.Fatalf("B, healthy, was taken down by A: %v, %d reconnects", st.Listener, st.ListenerReconnects)
		}
		time.Sleep(cfgA.ListenLease / 8)
	}
	if after := pid(); after != before {
		t.Fatalf("the shared connection was replaced (pid %d, then %d)", before, after)
	}
	if st := a.Stats(); st.Listener != pgsession.ListenerDown {
		t.Fatalf("A, which hears nothing, is %v", st.Listener)
	}
}

// TestNewDoesNotWaitForTheHubsBackoff: a Store created while the
// listening connection it would share sleeps a long reconnect backoff
// connects at once.
func TestNewDoesNotWaitForTheHubsBackoff(t *testing.T) {
	t.Parallel()
	url, proxy := proxiedURL(t)
	pool := newPool(t, testDB.url)
	cfgA, cfgB := listeningThrough(t, url, 400*time.Millisecond, 400*time.Millisecond)
	logs := &logCounter{}
	cfgA.Logger = slog.New(logs)
	a := newStore(t, pool, cfgA)
	proxy.Stop()
	// Five failed attempts: the next waits 4 to 8 s.
	waitFor(t, "five failed reconnects", func() bool { return logs.count(slog.LevelDebug, "reconnect failed") >= 5 })
	proxy.Start()
	start := time.Now()
	b, err := pgsession.New(context.Background(), pool, cfgB)
	if err != nil {
		t.Fatalf("New failed though the database answers: %v", err)
	}
	defer b.Close()
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("New took %v: it waited for the backoff", d)
	}
	waitFor(t, "A up again", func() bool { return a.Stats().Listener == pgsession.ListenerUp })
}
