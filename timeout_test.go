package pgsession_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgsession/pgsession"
)

// TestAbsoluteTimeout: an active session ends AbsoluteTimeout after it
// began, on every instance, however often it is written; an unchanged
// Save near that end costs no round trip.
func TestAbsoluteTimeout(t *testing.T) {
	t.Parallel()
	cfg := userConfig(t)
	cfg.AbsoluteTimeout = 2 * time.Second
	a, b := twoStores(t, cfg)
	start := time.Now()
	sess, c := login(t, a, map[any]any{"n": 0})

	var over bool
	err := testDB.pool.QueryRow(context.Background(), "SELECT expires_at > created_at + interval '2 seconds' FROM "+
		pgx.Identifier{cfg.Table}.Sanitize()).Scan(&over)
	if err != nil || over {
		t.Fatalf("expiry past created_at + AbsoluteTimeout (%v)", err)
	}

	// Unchanged Saves: the expiry cannot grow, so no refresh each time.
	for range 5 {
		save(t, a, get(t, a, c))
	}
	if st := a.Stats(); st.Refreshes > 1 {
		t.Fatalf("%d refreshes for 5 unchanged Saves", st.Refreshes)
	}

	// Active on both instances: written every 100 ms, read on b.
	n := 0
	for {
		sa := get(t, a, c)
		sb := get(t, b, c)
		if sa.IsNew && sb.IsNew {
			break
		}
		if time.Since(start) > 2*time.Second+500*time.Millisecond {
			t.Fatalf("still alive %v after it began (a new %v, b new %v)", time.Since(start), sa.IsNew, sb.IsNew)
		}
		if !sa.IsNew {
			n++
			sa.Values["n"] = n
			if err := a.Save(request(nil), httptest.NewRecorder(), sa); err != nil && !errors.Is(err, pgsession.ErrDeleted) {
				t.Fatal(err)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if el := time.Since(start); el < 1900*time.Millisecond {
		t.Fatalf("ended after %v, before AbsoluteTimeout", el)
	}
	_ = sess
}

// TestLoginRestartsTheAbsoluteTimeout: a change of user renews the token,
// and its session begins then.
func TestLoginRestartsTheAbsoluteTimeout(t *testing.T) {
	t.Parallel()
	cfg := userConfig(t)
	cfg.AbsoluteTimeout = 2 * time.Second
	s := newStore(t, testDB.pool, cfg)
	sess, _ := login(t, s, map[any]any{"cart": 1})
	time.Sleep(1500 * time.Millisecond)
	sess.Values["uid"] = "ada"
	c := save(t, s, sess)
	time.Sleep(1 * time.Second) // past the first token's end
	if got := get(t, s, c); got.IsNew || got.Values["uid"] != "ada" {
		t.Fatalf("the logged-in session ended with the anonymous one's timeout: %v", got.Values)
	}
	_ = http.Cookie{}
}

// TestIdleTimeout: a session only read (never saved after login) lives on
// through touches, across instances; one not read ends after IdleTimeout.
func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.IdleTimeout = 1500 * time.Millisecond
	a, b := twoStores(t, cfg)
	_, read := login(t, a, map[any]any{"n": 1})
	_, unread := login(t, a, map[any]any{"n": 2})
	start := time.Now()
	// Read every IdleTimeout/3, alternately on each instance, for three
	// IdleTimeouts.
	for i := 0; time.Since(start) < 3*cfg.IdleTimeout; i++ {
		s := []*pgsession.Store{a, b}[i%2]
		if got := get(t, s, read); got.IsNew {
			t.Fatalf("a session read every IdleTimeout/3 ended after %v", time.Since(start))
		}
		time.Sleep(cfg.IdleTimeout / 3)
	}
	for _, s := range []*pgsession.Store{a, b} {
		if !get(t, s, unread).IsNew {
			t.Fatalf("a session unread for %v still works", time.Since(start))
		}
	}
	sent := a.Stats().TouchesSent + b.Stats().TouchesSent
	if sent == 0 || a.Stats().TouchesFailed+b.Stats().TouchesFailed != 0 {
		t.Fatalf("touches: %+v %+v", a.Stats(), b.Stats())
	}
	var lastSeen time.Time
	if err := testDB.pool.QueryRow(context.Background(), "SELECT last_seen FROM "+pgx.Identifier{cfg.Table}.Sanitize()+
		" WHERE key_hash = $1", pgsession.KeyHash(get(t, a, read).ID)).Scan(&lastSeen); err != nil {
		t.Fatal(err)
	}
	if time.Since(lastSeen) > cfg.IdleTimeout {
		t.Fatalf("last_seen %v ago", time.Since(lastSeen))
	}
}

// TestTouchThrottle: reads of a session send at most one touch per
// min(RefreshAfter, IdleTimeout/10) of the store's clock.
func TestTouchThrottle(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.IdleTimeout = time.Hour
	cfg.RefreshAfter = time.Minute
	clk := newClock()
	cfg.Clock = clk.Now
	s := newStore(t, testDB.pool, cfg)
	_, c := login(t, s, map[any]any{"n": 1})
	for range 100 {
		get(t, s, c)
	}
	if n := s.Stats().TouchesSent; n != 0 {
		t.Fatalf("%d touches right after the write", n)
	}
	for round := 1; round <= 3; round++ {
		clk.Advance(time.Minute)
		for range 100 {
			get(t, s, c)
		}
		waitFor(t, "the touch", func() bool { return s.Stats().TouchesSent >= int64(round) })
		time.Sleep(20 * time.Millisecond)
		if n := s.Stats().TouchesSent; n != int64(round) {
			t.Fatalf("round %d: %d touches", round, n)
		}
	}
}

// TestIdleAndAbsoluteTimeout: touches never extend a session past its
// absolute end.
func TestIdleAndAbsoluteTimeout(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.IdleTimeout = time.Second
	cfg.AbsoluteTimeout = 2500 * time.Millisecond
	cfg.RefreshAfter = 50 * time.Millisecond
	s := newStore(t, testDB.pool, cfg)
	start := time.Now()
	_, c := login(t, s, map[any]any{"n": 1})
	for !get(t, s, c).IsNew {
		if time.Since(start) > cfg.AbsoluteTimeout+500*time.Millisecond {
			t.Fatalf("alive %v after it began", time.Since(start))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if el := time.Since(start); el < cfg.AbsoluteTimeout-100*time.Millisecond {
		t.Fatalf("ended after %v, before AbsoluteTimeout", el)
	}
	if s.Stats().TouchesSent == 0 {
		t.Fatal("no touches")
	}
}

// TestTouchThrottleWithoutCache: with the cache off every Get loads, and
// the loads are throttled all the same.
func TestTouchThrottleWithoutCache(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.IdleTimeout = time.Hour
	cfg.RefreshAfter = time.Minute
	cfg.CacheSize = -1
	clk := newClock()
	cfg.Clock = clk.Now
	s := newStore(t, testDB.pool, cfg)
	_, c := login(t, s, map[any]any{"n": 1})
	for round := 1; round <= 2; round++ {
		for range 50 {
			get(t, s, c)
		}
		waitFor(t, "the touch", func() bool { return s.Stats().TouchesSent >= int64(round) })
		time.Sleep(20 * time.Millisecond)
		if n := s.Stats().TouchesSent; n != int64(round) {
			t.Fatalf("round %d: %d touches for 50 loads", round, n)
		}
		clk.Advance(time.Minute)
	}
}
