package pgsession_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

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
	if err := s.Clear(context.Background()); err != nil {
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
	if err := a.Clear(ctx); err != nil {
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
