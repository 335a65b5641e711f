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
