package pgsession_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgsession/pgsession"
)

// Regenerate of a session logged out meanwhile must not revive its values
// under a new token.
func TestRegenerateAfterLogoutIsRefused(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := newStore(t, testDB.pool, cfg)
	_, c := login(t, s, map[any]any{"user": "ada"})
	sess := get(t, s, c)
	if err := s.Delete(context.Background(), sess.ID); err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	if err := s.Regenerate(request(c), w, sess); !errors.Is(err, pgsession.ErrDeleted) {
		t.Fatalf("Regenerate after logout: %v, want ErrDeleted", err)
	}
	if responseCookie(t, w) != nil {
		t.Fatal("the refused Regenerate set a cookie")
	}
	if n, _ := s.Len(context.Background()); n != 0 {
		t.Fatalf("Len = %d: the values live on under a new token", n)
	}
}

// Clear must be as final as a logout: a request that loaded a session
// before it cannot save it back.
func TestClearIsNotUndoneByARequestUnderWay(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := newStore(t, testDB.pool, cfg)
	_, c := login(t, s, map[any]any{"user": "ada"})
	slow := get(t, s, c)
	if _, err := s.Clear(context.Background()); err != nil {
		t.Fatal(err)
	}
	slow.Values["n"] = 1
	if err := s.Save(request(c), httptest.NewRecorder(), slow); !errors.Is(err, pgsession.ErrDeleted) {
		t.Fatalf("Save after Clear: %v, want ErrDeleted", err)
	}
	if n, _ := s.Len(context.Background()); n != 0 {
		t.Fatalf("Len = %d after Clear", n)
	}
}

func TestRegenerate(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	a, b := twoStores(t, cfg)
	sess, oldCookie := login(t, a, map[any]any{"user": "ada"})
	oldID := sess.ID
	get(t, b, oldCookie) // cached on b

	w := httptest.NewRecorder()
	if err := a.Regenerate(request(oldCookie), w, sess); err != nil {
		t.Fatal(err)
	}
	newCookie := responseCookie(t, w)
	if newCookie == nil || sess.ID == oldID || sess.ID == "" {
		t.Fatalf("after Regenerate: cookie %v, ID %q (was %q)", newCookie, sess.ID, oldID)
	}
	waitFor(t, "b to drop the old session", func() bool {
		_, ok := pgsession.Cached(b, oldID)
		return !ok
	})
	for name, st := range map[string]*pgsession.Store{"a": a, "b": b} {
		if got := get(t, st, oldCookie); !got.IsNew {
			t.Fatalf("%s still serves the old token", name)
		}
		if got := get(t, st, newCookie); got.IsNew || got.Values["user"] != "ada" {
			t.Fatalf("%s: the new cookie does not carry the values: %v", name, got.Values)
		}
	}
	if rows := liveRows(t, cfg.Table); rows != 1 {
		t.Fatalf("%d live rows after Regenerate, want 1", rows)
	}
}

func TestLenDeleteClear(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	a, b := twoStores(t, cfg)
	ctx := context.Background()
	var ids []string
	var cookies []*http.Cookie
	for i := range 5 {
		sess, c := login(t, a, map[any]any{"n": i})
		ids, cookies = append(ids, sess.ID), append(cookies, c)
		get(t, b, c)
	}
	insertExpired(t, cfg.Table, 2)
	if n, err := a.Len(ctx); err != nil || n != 5 {
		t.Fatalf("Len = %d, %v; want 5 (expired rows do not count)", n, err)
	}

	if err := a.Delete(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if n, _ := b.Len(ctx); n != 4 {
		t.Fatalf("Len after Delete = %d, want 4", n)
	}
	waitFor(t, "b to drop the deleted session", func() bool {
		_, ok := pgsession.Cached(b, ids[0])
		return !ok
	})
	if got := get(t, b, cookies[0]); !got.IsNew {
		t.Fatal("b serves a deleted session")
	}
	if err := a.Delete(ctx, ids[0]); err != nil {
		t.Fatalf("deleting a deleted session: %v", err)
	}
	if err := a.Delete(ctx, "not-a-token"); !errors.Is(err, pgsession.ErrInvalidID) {
		t.Fatalf("Delete of a bad token: %v, want ErrInvalidID", err)
	}

	drops := b.Stats().CacheDrops
	if _, err := a.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := a.Len(ctx); n != 0 {
		t.Fatalf("Len after Clear = %d", n)
	}
	waitFor(t, "b to drop its cache", func() bool { return b.Stats().CacheDrops > drops })
	for i, c := range cookies {
		if got := get(t, b, c); !got.IsNew {
			t.Fatalf("b serves session %d after Clear", i)
		}
		if got := get(t, a, c); !got.IsNew {
			t.Fatalf("a serves session %d after Clear", i)
		}
	}
}

// fillLive inserts n live sessions by plain SQL (rows no cookie names).
func fillLive(t *testing.T, table string, n int) {
	t.Helper()
	_, err := testDB.pool.Exec(context.Background(), `INSERT INTO `+pgx.Identifier{table}.Sanitize()+
		` (key_hash, data, expires_at) SELECT sha256(convert_to(gen_random_uuid()::text, 'UTF8')), '\x', now() + interval '1 hour'
		FROM generate_series(1, $1)`, n)
	if err != nil {
		t.Fatal(err)
	}
}

// TestClearInBatchesDoesNotStallSaves: Clear of many sessions works in
// short batches, so logins going on meanwhile are not held up, and every
// session it reports is logged out on every instance.
func TestClearInBatchesDoesNotStallSaves(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	a, b := twoStores(t, cfg)
	fillLive(t, cfg.Table, 300_000)
	var cookies []*http.Cookie
	for i := range 50 {
		_, c := login(t, a, map[any]any{"n": i})
		get(t, b, c)
		cookies = append(cookies, c)
	}
	before := liveRows(t, cfg.Table)

	stop := make(chan struct{})
	var slowest atomic.Int64
	var saves atomic.Int64
	wait := goEach(t, 8, func(int) error {
		for {
			select {
			case <-stop:
				return nil
			default:
			}
			took, err := saveWithin(a, newSession(a, "login"), 0)
			if err != nil {
				return err
			}
			saves.Add(1)
			for {
				old := slowest.Load()
				if int64(took) <= old || slowest.CompareAndSwap(old, int64(took)) {
					break
				}
			}
		}
	})
	start := time.Now()
	n, err := a.Clear(context.Background())
	took := time.Since(start)
	close(stop)
	wait()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Clear logged out %d sessions in %v; %d saves meanwhile, the slowest %v", n, took, saves.Load(), time.Duration(slowest.Load()))
	if n < int64(before) {
		t.Fatalf("Clear reports %d sessions, %d were live before it", n, before)
	}
	if d := time.Duration(slowest.Load()); d > 500*time.Millisecond {
		t.Fatalf("a Save took %v during Clear, want at most 500ms", d)
	}
	for i, c := range cookies {
		if got := get(t, b, c); !got.IsNew {
			t.Fatalf("session %d is served by another instance after Clear", i)
		}
	}
	if left := liveRowsCreatedBefore(t, cfg.Table, start); left != 0 {
		t.Fatalf("%d sessions that existed before Clear are still live", left)
	}
}

// TestClearStopsAtItsDeadline: a Clear cut short by its context says how
// many it logged out, and those stay logged out.
func TestClearStopsAtItsDeadline(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := newStore(t, testDB.pool, cfg)
	fillLive(t, cfg.Table, 100_000)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	n, err := s.Clear(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || n <= 0 || n >= 100_000 {
		t.Fatalf("Clear with a 100ms deadline: %d, %v; want some but not all, and the deadline", n, err)
	}
	var tombstones int64
	if err := testDB.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{cfg.Table}.Sanitize()+
		" WHERE deleted").Scan(&tombstones); err != nil {
		t.Fatal(err)
	}
	// The batch under way when the deadline passed may have committed too.
	if tombstones < n || tombstones > n+1000 {
		t.Fatalf("Clear reported %d, the table has %d tombstones", n, tombstones)
	}
}

// liveRowsCreatedBefore counts live sessions created before t.
func liveRowsCreatedBefore(tb testing.TB, table string, t time.Time) int {
	tb.Helper()
	var n int
	err := testDB.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{table}.Sanitize()+
		" WHERE NOT deleted AND expires_at > now() AND created_at < $1", t).Scan(&n)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}
