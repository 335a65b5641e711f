package pgsession_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/sessions"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgsession/pgsession"
)

// replicaPair is a throwaway primary and a streaming standby of it, made
// with pg_basebackup -R.
type replicaPair struct {
	primary, standby *throwawayServer
	admin            *pgxpool.Pool // superuser on the primary
	standbyAdmin     *pgxpool.Pool // superuser on the standby
}

// startReplicaPair starts a primary (initdb's defaults: wal_level replica,
// replication connections from 127.0.0.1 trusted), clones it with
// pg_basebackup -R into a standby on its own port, and waits until the
// standby replays. Both stop at t's cleanup.
func startReplicaPair(t *testing.T) *replicaPair {
	t.Helper()
	p := &replicaPair{primary: newThrowawayServer(t)}
	p.admin = smallPool(t, p.primary.URL())
	var level string
	if err := p.admin.QueryRow(context.Background(), "SHOW wal_level").Scan(&level); err != nil {
		t.Fatal(err)
	}
	if level != "replica" && level != "logical" {
		t.Fatalf("the throwaway primary has wal_level %q: a streaming standby needs replica", level)
	}

	dir, err := os.MkdirTemp("", "pgsession-standby-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	st := &throwawayServer{t: t, bindir: p.primary.bindir, dir: dir, port: freePort(t)}
	st.cred = postgresCredential(t, "pg_basebackup", dir) // the standby runs as postgres too
	if err := st.run("pg_basebackup", "-D", st.data(), "-R", "-X", "stream", "-c", "fast",
		"-h", "127.0.0.1", "-p", strconv.Itoa(p.primary.port), "-U", "postgres"); err != nil {
		t.Fatalf("clone the primary into a standby: %v", err)
	}
	st.Start()
	t.Cleanup(func() { st.pgctl("stop", "-m", "immediate") })
	p.standby = st
	p.standbyAdmin = smallPool(t, st.URL())
	var inRecovery bool
	if err := p.standbyAdmin.QueryRow(context.Background(), "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil || !inRecovery {
		t.Fatalf("the standby is not in recovery (%v): pg_basebackup -R did not make it one", err)
	}
	p.caughtUp(t)
	return p
}

// smallPool returns a pool of at most 2 connections (and a listener's,
// hijacked) to url, closed at cleanup: the local server's connections are
// shared with other test runs.
func smallPool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// caughtUp waits until the standby has replayed all the WAL the primary
// had inserted when it was called. Some records are inserted without a
// flush (the commit of a transaction that wrote nothing else, such as a
// probe's pg_notify, is asynchronous); the commit of a write flushes
// everything before it.
func (p *replicaPair) caughtUp(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	var lsn string
	_, err := p.admin.Exec(ctx, "CREATE TABLE IF NOT EXISTS flush_wal (n int); INSERT INTO flush_wal VALUES (1)")
	if err == nil {
		err = p.admin.QueryRow(ctx, "SELECT pg_current_wal_flush_lsn()::text").Scan(&lsn)
	}
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the standby to replay "+lsn, func() bool {
		var ok bool
		err := p.standbyAdmin.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", lsn).Scan(&ok)
		return err == nil && ok
	})
}

// pauseReplay stops the standby's replay until the returned function (or
// the test's cleanup) resumes it. WAL keeps arriving; it is not applied.
func (p *replicaPair) pauseReplay(t testing.TB) (resume func()) {
	t.Helper()
	ctx := context.Background()
	if _, err := p.standbyAdmin.Exec(ctx, "SELECT pg_wal_replay_pause()"); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	resume = func() {
		once.Do(func() {
			if _, err := p.standbyAdmin.Exec(ctx, "SELECT pg_wal_replay_resume()"); err != nil {
				t.Errorf("resume replay: %v", err)
			}
		})
	}
	t.Cleanup(resume)
	waitFor(t, "replay to pause", func() bool {
		var state string
		err := p.standbyAdmin.QueryRow(ctx, "SELECT pg_get_wal_replay_pause_state()").Scan(&state)
		return err == nil && state == "paused"
	})
	return resume
}

// stores returns instance A, on the primary alone, and instance B, whose
// misses read the standby, on one table (a fresh one unless cfg names
// it), once the standby has the table. B's notifications from others are
// applied only while hold is not locked.
func (p *replicaPair) stores(t *testing.T, cfg pgsession.Config, hold *sync.RWMutex) (a, b *pgsession.Store) {
	t.Helper()
	cfg.KeyPairs = [][]byte{hashKey, blockKey}
	if cfg.Table == "" {
		cfg.Table = tableName(t)
	}
	a = newStore(t, smallPool(t, p.primary.URL()), cfg)
	b = p.replicaStore(t, cfg, hold)
	p.caughtUp(t) // the table exists on the standby
	return a, b
}

// replicaStore returns an instance whose misses read the standby, on
// cfg's table, sampling every 10 ms. Its notifications from others are
// applied only while hold (if not nil) is not locked.
func (p *replicaPair) replicaStore(t *testing.T, cfg pgsession.Config, hold *sync.RWMutex) *pgsession.Store {
	t.Helper()
	cfg.KeyPairs = [][]byte{hashKey, blockKey}
	cfg.ReadPool = smallPool(t, p.standby.URL())
	cfg = pgsession.WithReplicaSample(cfg, 10*time.Millisecond)
	if hold != nil {
		cfg = pgsession.WithHandoff(cfg, 0, func() { hold.RLock(); hold.RUnlock() })
	}
	return newStore(t, smallPool(t, p.primary.URL()), cfg)
}

// TestReplica runs the read-replica tests against one primary and its
// streaming standby, started once for all of them.
func TestReplica(t *testing.T) {
	p := startReplicaPair(t)

	// A client that got version 2 from A reads it on B while the standby
	// still has version 1, before B heard of the write: B reads the
	// primary, as the cookie's version tells it to.
	t.Run("LagNeverShowsAnOlderSession", func(t *testing.T) {
		var hold sync.RWMutex
		a, b := p.stores(t, pgsession.Config{}, &hold)
		sess, c1 := login(t, a, map[any]any{"n": 1})
		p.caughtUp(t)
		if got := get(t, b, c1).Values["n"]; got != 1 {
			t.Fatalf("B read n=%v, want 1", got)
		}
		resume := p.pauseReplay(t)
		hold.Lock() // B does not hear the write: the cookie alone must tell
		sess.Values["n"] = 2
		c2 := save(t, a, sess)
		before := b.Stats()
		got := get(t, b, c2).Values["n"]
		after := b.Stats()
		hold.Unlock()
		resume()
		if got != 2 {
			t.Fatalf("B served n=%v with the lagging standby, want 2 (the client's version)", got)
		}
		if after.ReplicaFallbacks != before.ReplicaFallbacks+1 || after.ReplicaReads != before.ReplicaReads {
			t.Fatalf("replica reads %d->%d, fallbacks %d->%d: want one fallback to the primary",
				before.ReplicaReads, after.ReplicaReads, before.ReplicaFallbacks, after.ReplicaFallbacks)
		}
	})

	// A login on A, its first request on B while the standby lags and
	// before B heard of it: found, not a logout.
	t.Run("NoFalseLogout", func(t *testing.T) {
		var hold sync.RWMutex
		a, b := p.stores(t, pgsession.Config{}, &hold)
		resume := p.pauseReplay(t)
		hold.Lock()
		_, c := login(t, a, map[any]any{"user": "ann"})
		before := b.Stats()
		sess := get(t, b, c)
		after := b.Stats()
		hold.Unlock()
		resume()
		if sess.IsNew || sess.Values["user"] != "ann" {
			t.Fatalf("B: IsNew %v, values %v: a fresh login looked logged out on the lagging standby", sess.IsNew, sess.Values)
		}
		if after.ReplicaFallbacks != before.ReplicaFallbacks+1 {
			t.Fatalf("fallbacks %d->%d, want one", before.ReplicaFallbacks, after.ReplicaFallbacks)
		}
	})

	// B has the session cached; the standby lags; the user logs out on A
	// and B evicts it on the notification. The old cookie, replayed on B,
	// must stay logged out: the standby still holds the live row, which
	// nothing in the cookie tells apart, and the cache would keep it.
	t.Run("RevocationNotUndone", func(t *testing.T) {
		table := tableName(t)
		a, b := p.stores(t, pgsession.Config{Table: table}, nil)
		sess, c := login(t, a, map[any]any{"user": "bob"})
		p.caughtUp(t)
		if got := get(t, b, c); got.Values["user"] != "bob" {
			t.Fatalf("B read %v", got.Values)
		}
		if _, ok := pgsession.Cached(b, sess.ID); !ok {
			t.Fatal("B did not cache the session")
		}
		resume := p.pauseReplay(t)
		logout(t, a, c)
		waitFor(t, "B to evict the logged-out session", func() bool {
			_, ok := pgsession.Cached(b, sess.ID)
			return !ok
		})
		// Let B sample the primary's WAL position after it heard: it is then
		// the WAL position, not a pending invalidation, that refuses the
		// standby's answer.
		n := pgsession.ReplicaSamples(b)
		waitFor(t, "B to sample after the logout", func() bool { return pgsession.ReplicaSamples(b) >= n+2 })
		var deleted bool
		err := p.standbyAdmin.QueryRow(context.Background(),
			"SELECT deleted FROM "+pgx.Identifier{table}.Sanitize()+" WHERE key_hash = $1",
			pgsession.KeyHash(sess.ID)).Scan(&deleted)
		if err != nil || deleted {
			t.Fatalf("the standby should still hold the live row (deleted %v, err %v): the lag this test needs is not there", deleted, err)
		}
		before := b.Stats()
		got := get(t, b, c)
		after := b.Stats()
		resume()
		if !got.IsNew || len(got.Values) != 0 {
			t.Fatalf("B resurrected a logged-out session from the lagging standby: %v", got.Values)
		}
		if after.ReplicaFallbacks != before.ReplicaFallbacks+1 {
			t.Fatalf("fallbacks %d->%d, want one", before.ReplicaFallbacks, after.ReplicaFallbacks)
		}
		// Once replayed, the standby's tombstone is good enough.
		p.caughtUp(t)
		if got := get(t, b, c); !got.IsNew {
			t.Fatalf("after replay: %v", got.Values)
		}
	})

	// A logout on A while the standby lags, then an instance that starts
	// after it: it never heard of the logout, so only its start-up counts
	// as an invalidation of everything.
	t.Run("FreshInstanceAfterLogout", func(t *testing.T) {
		table := tableName(t)
		a, _ := p.stores(t, pgsession.Config{Table: table}, nil)
		_, c := login(t, a, map[any]any{"user": "cy"})
		p.caughtUp(t)
		p.pauseReplay(t)
		logout(t, a, c)
		b := p.replicaStore(t, pgsession.Config{Table: table}, nil)
		waitFor(t, "B's first WAL sample", func() bool { return pgsession.ReplicaSamples(b) > 0 })
		before := b.Stats()
		got := get(t, b, c)
		after := b.Stats()
		if !got.IsNew {
			t.Fatalf("a new instance resurrected a session logged out before it started: %v", got.Values)
		}
		if after.ReplicaFallbacks != before.ReplicaFallbacks+1 {
			t.Fatalf("fallbacks %d->%d, want one", before.ReplicaFallbacks, after.ReplicaFallbacks)
		}
	})

	// B's listener loses its connection; a logout on A while it is down
	// never reaches B. B reconnects and drops its cache: the drop, not a
	// key it heard, must keep the lagging standby's live row out.
	t.Run("ReconnectDropRefusesTheStandby", func(t *testing.T) {
		a, b := p.stores(t, pgsession.Config{}, nil)
		_, c := login(t, a, map[any]any{"user": "dee"})
		p.caughtUp(t)
		get(t, b, c)
		p.pauseReplay(t)
		var killed bool
		err := p.admin.QueryRow(context.Background(),
			"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
			pgsession.ListenerName(b)).Scan(&killed)
		if err != nil || !killed {
			t.Fatalf("terminate B's listener: %v %v", killed, err)
		}
		waitFor(t, "B's listener to go down", func() bool { return b.Stats().Listener == pgsession.ListenerDown })
		logout(t, a, c)
		if st := b.Stats(); st.Listener != pgsession.ListenerDown {
			t.Fatalf("B's listener came back before the logout returned (%v): the logout may have reached it, so this test would not test the drop", st.Listener)
		}
		waitFor(t, "B's listener to come back", func() bool {
			st := b.Stats()
			return st.Listener == pgsession.ListenerUp && st.ListenerReconnects >= 1
		})
		if got := get(t, b, c); !got.IsNew {
			t.Fatalf("B resurrected, after a reconnect, a session logged out while its listener was down: %v", got.Values)
		}
	})

	// Under repeatable read, the standby's row shares a snapshot with the
	// replay position, taken before it: the row may predate the position,
	// so it is never trusted, and the log says why, once.
	t.Run("RepeatableReadIsNotTrusted", func(t *testing.T) {
		table := tableName(t)
		a, _ := p.stores(t, pgsession.Config{Table: table}, nil)
		_, c := login(t, a, map[any]any{"n": 3})
		logs := &logCounter{}
		cfg := pgsession.Config{Table: table, Logger: slog.New(logs), KeyPairs: [][]byte{hashKey, blockKey}}
		cfg.ReadPool = smallPool(t, p.standby.URL()+"&default_transaction_isolation=repeatable%20read")
		b := newStore(t, smallPool(t, p.primary.URL()), pgsession.WithReplicaSample(cfg, 10*time.Millisecond))
		waitFor(t, "B's first WAL sample", func() bool { return pgsession.ReplicaSamples(b) > 0 })
		p.caughtUp(t) // past B's start-up sample: read committed would trust the standby now
		if got := get(t, b, c).Values["n"]; got != 3 {
			t.Fatalf("B read n=%v", got)
		}
		st := b.Stats()
		if st.ReplicaReads != 0 || st.ReplicaFallbacks != 1 {
			t.Fatalf("replica reads %d, fallbacks %d: a repeatable-read standby answer was trusted", st.ReplicaReads, st.ReplicaFallbacks)
		}
		if n := logs.count(slog.LevelWarn, "read committed"); n != 1 {
			t.Fatalf("%d warnings about the isolation level, want 1", n)
		}
	})

	// Under CoherenceRevocations saves are quiet, so B hears nothing that
	// would make it distrust the standby. A copy B reads from the standby
	// is only as new as the standby's replay: its MaxStale counts from the
	// newest WAL sample the standby had replayed, not from the read. So
	// with replay paused, a re-validation past MaxStale reads the primary,
	// every time, instead of renewing the superseded copy from the standby
	// (which would serve an older cookie the older version forever). Once
	// the standby catches up it answers re-validations again.
	t.Run("RevocationsMaxStaleCountsFromReplay", func(t *testing.T) {
		const maxStale = time.Minute
		clk := newClock()
		a, b := p.stores(t, pgsession.Config{Coherence: pgsession.CoherenceRevocations, MaxStale: maxStale,
			Clock: clk.Now, ScavengeInterval: -1}, nil)
		sess, c1 := login(t, a, map[any]any{"n": 1})
		p.caughtUp(t)
		if got := get(t, b, c1).Values["n"]; got != 1 {
			t.Fatalf("B read n=%v", got)
		}
		resume := p.pauseReplay(t)
		sess.Values["n"] = 2
		save(t, a, sess) // quiet: B hears nothing
		n := pgsession.ReplicaSamples(b)
		waitFor(t, "B to sample after the save", func() bool { return pgsession.ReplicaSamples(b) >= n+2 })
		for i := 1; i <= 3; i++ {
			clk.Advance(maxStale) // B's copy, whichever it is, is MaxStale old
			before := b.Stats()
			got := get(t, b, c1).Values["n"] // a client still holding the older cookie
			after := b.Stats()
			if got != 2 {
				t.Fatalf("%d x MaxStale after the save, with the standby paused before it, B serves the older cookie n=%v, want 2", i, got)
			}
			if after.Revalidations != before.Revalidations+1 || after.ReplicaFallbacks != before.ReplicaFallbacks+1 ||
				after.ReplicaReads != before.ReplicaReads {
				t.Fatalf("%d x MaxStale: revalidations +%d, replica reads +%d, fallbacks +%d; want one re-validation read around the standby", i,
					after.Revalidations-before.Revalidations, after.ReplicaReads-before.ReplicaReads, after.ReplicaFallbacks-before.ReplicaFallbacks)
			}
		}
		// Caught up, and past a sample B took at its clock's now: the
		// standby's row is current, and answers the next re-validation.
		resume()
		clk.Advance(maxStale)
		n = pgsession.ReplicaSamples(b)
		waitFor(t, "B to sample at its clock's now", func() bool { return pgsession.ReplicaSamples(b) >= n+2 })
		p.caughtUp(t)
		before := b.Stats()
		if got := get(t, b, c1).Values["n"]; got != 2 {
			t.Fatalf("after catching up: B serves n=%v", got)
		}
		if after := b.Stats(); after.Revalidations != before.Revalidations+1 || after.ReplicaReads != before.ReplicaReads+1 {
			t.Fatalf("after catching up: revalidations +%d, replica reads +%d; want the re-validation answered by the standby",
				after.Revalidations-before.Revalidations, after.ReplicaReads-before.ReplicaReads)
		}
	})

	// The same on the real clock (Config.Clock unset), as a reviewer found
	// it: the standby answers under CoherenceRevocations while it keeps up,
	// and past MaxStale of lag it no longer does.
	t.Run("RevocationsLaggingStandbyRealClock", func(t *testing.T) {
		const maxStale = 300 * time.Millisecond
		a, b := p.stores(t, pgsession.Config{Coherence: pgsession.CoherenceRevocations, MaxStale: maxStale}, nil)
		var sess *sessions.Session
		var c1 *http.Cookie
		waitFor(t, "a miss answered by the standby", func() bool {
			sess, c1 = login(t, a, map[any]any{"n": 1})
			p.caughtUp(t)
			before := b.Stats().ReplicaReads
			if got := get(t, b, c1).Values["n"]; got != 1 {
				t.Fatalf("B read n=%v", got)
			}
			return b.Stats().ReplicaReads > before
		})
		p.pauseReplay(t)
		sess.Values["n"] = 2
		save(t, a, sess) // quiet: B hears nothing
		for i := 1; i <= 2; i++ {
			time.Sleep(maxStale + 100*time.Millisecond)
			before := b.Stats()
			got := get(t, b, c1).Values["n"] // a client still holding the older cookie
			after := b.Stats()
			if got != 2 {
				t.Fatalf("%v after the save (MaxStale %v), B serves the older cookie n=%v (revalidations +%d, replica reads +%d, fallbacks +%d)",
					time.Duration(i)*(maxStale+100*time.Millisecond), maxStale, got, after.Revalidations-before.Revalidations,
					after.ReplicaReads-before.ReplicaReads, after.ReplicaFallbacks-before.ReplicaFallbacks)
			}
		}
	})

	// With replay running and a cold cache, a miss is answered by the
	// standby once it replayed past what B has heard; Stats counts the
	// miss against the pool that answered it.
	t.Run("MissesCountedPerPool", func(t *testing.T) {
		clk := newClock()
		a, b := p.stores(t, pgsession.Config{Clock: clk.Now, ScavengeInterval: -1}, nil)
		_, c := login(t, a, map[any]any{"n": 7})
		p.caughtUp(t)
		waitFor(t, "B's first WAL sample", func() bool { return pgsession.ReplicaSamples(b) > 0 })
		var before, after pgsession.Stats
		waitFor(t, "a miss answered by the standby", func() bool {
			// Evict B's entry so that the next Get misses (Scavenge sends
			// no invalidation: the guard is not involved).
			clk.Advance(pgsession.DefaultMaxIdle + time.Second)
			pgsession.Scavenge(b)
			before = b.Stats()
			if got := get(t, b, c).Values["n"]; got != 7 {
				t.Fatalf("B read n=%v", got)
			}
			after = b.Stats()
			return after.ReplicaReads > before.ReplicaReads
		})
		if after.CacheMisses != before.CacheMisses+1 || after.Loads != before.Loads+1 ||
			after.ReplicaReads != before.ReplicaReads+1 || after.ReplicaFallbacks != before.ReplicaFallbacks ||
			after.ReplicaErrors != 0 {
			t.Fatalf("one miss answered by the standby: before %+v, after %+v", before, after)
		}
		// The entry it filled serves the next Get.
		get(t, b, c)
		if st := b.Stats(); st.CacheHits != after.CacheHits+1 || st.Loads != after.Loads {
			t.Fatalf("the standby's answer was not cached: hits %d->%d, loads %d->%d", after.CacheHits, st.CacheHits, after.Loads, st.Loads)
		}
		if st := a.Stats(); st.ReplicaReads+st.ReplicaFallbacks+st.ReplicaErrors != 0 {
			t.Fatalf("A has no ReadPool, yet counts replica reads: %+v", st)
		}
	})
}

// TestReadPoolNil: without a ReadPool every miss reads the primary, and no
// replica counter moves.
func TestReadPoolNil(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	a := newStore(t, smallPool(t, testDB.url), cfg)
	b := newStore(t, smallPool(t, testDB.url), cfg)
	_, c := login(t, a, map[any]any{"n": 1})
	if got := get(t, b, c).Values["n"]; got != 1 {
		t.Fatalf("B read n=%v", got)
	}
	st := b.Stats()
	if st.Loads != 1 || st.ReplicaReads != 0 || st.ReplicaFallbacks != 0 || st.ReplicaErrors != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestReadPoolPrimary: a ReadPool that is not in recovery (a primary, or
// the same server) has no replay position: its answers are current.
func TestReadPoolPrimary(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	a := newStore(t, smallPool(t, testDB.url), cfg)
	bcfg := pgsession.WithReplicaSample(cfg, 10*time.Millisecond)
	bcfg.ReadPool = smallPool(t, testDB.url)
	b := newStore(t, smallPool(t, testDB.url), bcfg)
	_, c := login(t, a, map[any]any{"n": 1})
	if got := get(t, b, c).Values["n"]; got != 1 {
		t.Fatalf("B read n=%v", got)
	}
	if st := b.Stats(); st.ReplicaReads != 1 || st.ReplicaFallbacks != 0 {
		t.Fatalf("stats %+v: want the miss answered by the ReadPool", st)
	}
}

// TestReadPoolErrors: a ReadPool that fails is read around: the primary
// answers, the failures are counted, and the outage is logged once.
func TestReadPoolErrors(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	logs := &logCounter{}
	a := newStore(t, smallPool(t, testDB.url), cfg)
	bcfg := pgsession.WithReplicaSample(cfg, 10*time.Millisecond)
	bcfg.Logger = slog.New(logs)
	// Nothing listens on a port just freed.
	bcfg.ReadPool = newPool(t, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2", freePort(t)))
	b := newStore(t, smallPool(t, testDB.url), bcfg)
	for i := range 3 {
		_, c := login(t, a, map[any]any{"n": i})
		if got := get(t, b, c).Values["n"]; got != i {
			t.Fatalf("B read n=%v, want %d", got, i)
		}
	}
	// The first failure sends the next misses to the primary for a
	// second, without trying the ReadPool.
	st := b.Stats()
	if st.ReplicaErrors != 1 || st.ReplicaReads != 0 || st.Errors != 0 || st.Loads != 3 {
		t.Fatalf("stats %+v: want 1 replica error, 3 loads read around", st)
	}
	// Then it is tried again.
	n := 3
	waitFor(t, "the ReadPool to be tried again", func() bool {
		_, c := login(t, a, map[any]any{"n": n})
		if got := get(t, b, c).Values["n"]; got != n {
			t.Fatalf("B read n=%v, want %d", got, n)
		}
		n++
		return b.Stats().ReplicaErrors == 2
	})
	if n := logs.count(slog.LevelWarn, "ReadPool"); n != 1 {
		t.Fatalf("%d warnings about the ReadPool, want one per outage", n)
	}
}

// TestReadPoolNeedsCache: the guard needs the listener, so the cache.
func TestReadPoolNeedsCache(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.CacheSize = -1
	cfg.ReadPool = newPool(t, testDB.url)
	_, err := pgsession.New(context.Background(), newPool(t, testDB.url), cfg)
	if !errors.Is(err, pgsession.ErrInvalidConfig) {
		t.Fatalf("New: %v, want ErrInvalidConfig", err)
	}
}
