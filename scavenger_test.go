package pgsession_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
)

func TestScavengerEvictsExactlyTheIdle(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.ScavengeInterval = -1 // passes run by hand below
	clk := newClock()
	cfg.Clock = clk.Now
	s := newStore(t, testDB.pool, cfg)

	var ids []string
	var cookies []*http.Cookie
	for i := range 6 {
		sess, c := login(t, s, map[any]any{"n": i})
		ids, cookies = append(ids, sess.ID), append(cookies, c)
	}
	clk.Advance(3 * time.Minute)
	for _, c := range cookies[3:] {
		get(t, s, c) // used 3 minutes in: stays
	}
	clk.Advance(3 * time.Minute) // the first three are now idle for 6 > 5 minutes

	if n := pgsession.Scavenge(s); n != 3 {
		t.Fatalf("scavenged %d, want 3", n)
	}
	for i, id := range ids {
		_, cached := pgsession.Cached(s, id)
		if cached != (i >= 3) {
			t.Fatalf("session %d: cached %v after the scavenge, want %v", i, cached, i >= 3)
		}
	}
	if st := s.Stats(); st.Scavenged != 3 || st.Entries != 3 {
		t.Fatalf("stats %+v, want 3 scavenged, 3 entries", st)
	}
	// Scavenged is not logged out: the next read loads it again.
	if got := get(t, s, cookies[0]); got.IsNew || got.Values["n"] != 0 {
		t.Fatalf("a scavenged session was lost: %v", got.Values)
	}
	if n := pgsession.Scavenge(s); n != 0 {
		t.Fatalf("a second pass scavenged %d fresh entries", n)
	}
}

func TestScavengerRunsAndDisabledNeverDoes(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	clk := newClock()
	cfg.Clock = clk.Now
	cfg.ScavengeInterval = 10 * time.Millisecond
	on := newStore(t, testDB.pool, cfg)
	cfg.ScavengeInterval = -1
	off := newStore(t, testDB.pool, cfg)
	for range 4 {
		login(t, on, map[any]any{"n": 1})
		login(t, off, map[any]any{"n": 1})
	}
	clk.Advance(pgsession.DefaultMaxIdle + time.Second)
	waitFor(t, "the scavenger to empty the cache", func() bool { return on.Stats().Entries == 0 })
	runs := pgsession.ScavengeRuns(on)
	waitFor(t, "three more passes", func() bool { return pgsession.ScavengeRuns(on) >= runs+3 })
	if st := off.Stats(); st.Entries != 4 || st.Scavenged != 0 || pgsession.ScavengeRuns(off) != 0 {
		t.Fatalf("with the scavenger disabled: %+v, %d runs", st, pgsession.ScavengeRuns(off))
	}
}
