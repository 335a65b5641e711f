package pgsession_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgsession/pgsession"
)

// userConfig is testConfig with UserKey "uid".
func userConfig(t *testing.T) pgsession.Config {
	cfg := testConfig(t)
	cfg.UserKey = "uid"
	return cfg
}

// userOf returns the user_id stored for the session ID, or "<none>" for
// NULL.
func userOf(t testing.TB, table, id string) string {
	t.Helper()
	var u *string
	err := testDB.pool.QueryRow(context.Background(), "SELECT user_id FROM "+pgx.Identifier{table}.Sanitize()+
		" WHERE key_hash = $1", pgsession.KeyHash(id)).Scan(&u)
	if err != nil {
		t.Fatal(err)
	}
	if u == nil {
		return "<none>"
	}
	return *u
}

// TestLoginRenewsTheToken: a session ID planted before login is refused
// after it, on every instance; the new cookie works everywhere.
func TestLoginRenewsTheToken(t *testing.T) {
	t.Parallel()
	cfg := userConfig(t)
	a, b := twoStores(t, cfg)
	sess, planted := login(t, a, map[any]any{"cart": "x"})
	if got := get(t, b, planted); got.IsNew {
		t.Fatal("b does not know the pre-login session")
	}
	preID := sess.ID

	sess.Values["uid"] = 42
	c := save(t, a, sess)
	if c == nil || sess.ID == preID {
		t.Fatalf("login kept the token (cookie %v)", c)
	}
	for name, s := range map[string]*pgsession.Store{"a": a, "b": b} {
		waitFor(t, name+" to refuse the planted cookie", func() bool { return get(t, s, planted).IsNew })
		got := get(t, s, c)
		if got.IsNew || got.Values["uid"] != 42 || got.Values["cart"] != "x" {
			t.Fatalf("%s: the new cookie: new %v, values %v", name, got.IsNew, got.Values)
		}
	}
	if u := userOf(t, cfg.Table, sess.ID); u != "42" {
		t.Fatalf("user_id %q, want 42", u)
	}

	// A save that keeps the user keeps the token.
	sess = get(t, b, c)
	sess.Values["n"] = 1
	if save(t, b, sess); sess.ID != get(t, b, c).ID {
		t.Fatal("a save by the same user renewed the token")
	}

	// Another user, then no user: each renews.
	for _, v := range []any{"ada", nil} {
		id := sess.ID
		if v == nil {
			delete(sess.Values, "uid")
		} else {
			sess.Values["uid"] = v
		}
		c = save(t, b, sess)
		if sess.ID == id {
			t.Fatalf("uid %v kept the token", v)
		}
		waitFor(t, "a to refuse the old cookie", func() bool {
			s, err := a.Get(requestWithID(t, a, id), cookieName)
			return err == nil && s.IsNew
		})
	}
	if u := userOf(t, cfg.Table, sess.ID); u != "<none>" {
		t.Fatalf("user_id %q after the logout of the user, want none", u)
	}
}

// requestWithID returns a request carrying a cookie for the session ID at
// version 1 (enough to read it: the store reloads older cookies).
func requestWithID(t testing.TB, s *pgsession.Store, id string) *http.Request {
	t.Helper()
	v, err := pgsession.SignCookieForID(s, cookieName, id)
	if err != nil {
		t.Fatal(err)
	}
	return request(&http.Cookie{Name: cookieName, Value: v})
}

// TestConcurrentLoginsInOneBatch: logins group-committed together each
// renew their token.
func TestConcurrentLoginsInOneBatch(t *testing.T) {
	t.Parallel()
	cfg := userConfig(t)
	s := newStore(t, testDB.pool, cfg)
	const n = 40
	cookies := make([]*http.Cookie, n)
	for i := range n {
		_, cookies[i] = login(t, s, map[any]any{"i": i})
	}
	renewed := make([]*http.Cookie, n)
	goEach(t, n, func(i int) error {
		sess, err := s.Get(request(cookies[i]), cookieName)
		if err != nil {
			return err
		}
		sess.Values["uid"] = uint16(i)
		w := httptest.NewRecorder()
		if err := s.Save(request(nil), w, sess); err != nil {
			return err
		}
		renewed[i] = responseCookie(t, w)
		return nil
	})()
	for i := range n {
		if !get(t, s, cookies[i]).IsNew {
			t.Fatalf("session %d: the pre-login cookie still works", i)
		}
		if got := get(t, s, renewed[i]); got.IsNew || got.Values["i"] != i {
			t.Fatalf("session %d after login: new %v, values %v", i, got.IsNew, got.Values)
		}
	}
}

func TestInvalidUserWritesNothing(t *testing.T) {
	t.Parallel()
	cfg := userConfig(t)
	s := newStore(t, testDB.pool, cfg)
	sess, c := login(t, s, map[any]any{"n": 1})
	sess.Values["uid"] = 1.5
	sess.Values["n"] = 2
	err := s.Save(request(nil), httptest.NewRecorder(), sess)
	if !errors.Is(err, pgsession.ErrInvalidUser) {
		t.Fatalf("Save with a float user: %v, want ErrInvalidUser", err)
	}
	if got := get(t, s, c); got.Values["n"] != 1 {
		t.Fatalf("values %v after the failed Save", got.Values)
	}
	fresh := get(t, s, nil)
	fresh.Values["uid"] = []string{"x"}
	if err := s.Save(request(nil), httptest.NewRecorder(), fresh); !errors.Is(err, pgsession.ErrInvalidUser) || fresh.ID != "" {
		t.Fatalf("Save of a new session with a slice user: %v, ID %q", err, fresh.ID)
	}
	if n := countRows(t, cfg.Table); n != 1 {
		t.Fatalf("%d rows, want 1", n)
	}
}
