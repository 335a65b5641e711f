package pgsession_test

import (
	"context"
	"testing"

	"github.com/pgsession/pgsession"
)

// TestHandoffOverflowDropsTheCache: when notifications arrive faster than
// they are applied, the read loop must not block and must not drop a
// notification: it drops the whole cache. Not parallel: it sets a
// package-wide test seam.
func TestHandoffOverflowDropsTheCache(t *testing.T) {
	hold := make(chan struct{})
	held := make(chan struct{}, 1)
	pgsession.SetHandoff(2, func() {
		select {
		case held <- struct{}{}:
		default:
		}
		<-hold
	})
	t.Cleanup(func() { pgsession.SetHandoff(4096, nil) }) // after the store is closed
	s := newStore(t, newPool(t, testDB.url), testConfig(t))
	t.Cleanup(func() {
		select {
		case <-hold:
		default:
			close(hold)
		}
	})
	_, c := login(t, s, map[any]any{"n": 1}) // its echo holds the applier
	<-held
	get(t, s, c)
	if st := s.Stats(); st.Entries != 1 {
		t.Fatalf("entries %d before the burst", st.Entries)
	}
	// Four notifications while the applier is held: two fit, the rest overflow.
	for range 4 {
		if _, err := testDB.pool.Exec(context.Background(), "SELECT pg_notify($1, 'noise')", pgsession.Channel(s)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the overflow to drop the cache", func() bool { return s.Stats().CacheDrops >= 1 })
	if st := s.Stats(); st.Entries != 0 || st.Listener != pgsession.ListenerUp {
		t.Fatalf("after the overflow: %+v; want an empty cache and the listener still up", st)
	}
	close(hold)
	waitFor(t, "the held notifications to be applied", func() bool { return s.Stats().BadNotifications >= 2 })
}
