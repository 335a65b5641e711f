package pgsession_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgsession/pgsession"
)

// TestUserDevices: one user logged in from three devices across three
// instances; listing, revoking one, logging out the others, and logging
// out the user, also with a request under way.
func TestUserDevices(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := userConfig(t)
	a, b := twoStores(t, cfg)
	c := newStore(t, newPool(t, testDB.url), cfg)
	stores := []*pgsession.Store{a, b, c}

	var cookies []*http.Cookie
	var handles []string
	for i, s := range stores {
		sess, ck := login(t, s, map[any]any{"uid": "ada", "device": i})
		cookies = append(cookies, ck)
		handles = append(handles, s.Handle(sess))
	}
	_, bobCookie := login(t, a, map[any]any{"uid": "bob"})
	// Every instance caches every device.
	for _, s := range stores {
		for _, ck := range cookies {
			if get(t, s, ck).IsNew {
				t.Fatal("a device's session does not load")
			}
		}
	}

	list, err := b.Sessions(ctx, "ada")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 {
		t.Fatalf("Sessions: %d, want 3: %+v", len(list), list)
	}
	for i, si := range list {
		if si.User != "ada" || si.Handle == "" || si.CreatedAt.IsZero() || si.LastSeen.IsZero() || !si.ExpiresAt.After(si.CreatedAt) {
			t.Fatalf("session %d: %+v", i, si)
		}
		if i > 0 && si.CreatedAt.After(list[i-1].CreatedAt) {
			t.Fatalf("not newest first: %+v", list)
		}
		if !slices.Contains(handles, si.Handle) {
			t.Fatalf("handle %q is none of the devices' %q", si.Handle, handles)
		}
	}
	if h := slices.Compact(slices.Sorted(slices.Values(handles))); len(h) != 3 {
		t.Fatalf("handles not distinct: %q", handles)
	}
	if h := a.Handle(get(t, a, nil)); h != "" {
		t.Fatalf("Handle of a session never saved: %q", h)
	}
	// A handle is no cookie.
	if get(t, a, &http.Cookie{Name: cookieName, Value: handles[0]}).IsNew == false {
		t.Fatal("a handle works as a cookie")
	}

	// Another user cannot revoke ada's session.
	if err := c.Revoke(ctx, "bob", handles[0]); err != nil {
		t.Fatalf("bob's Revoke of ada's handle: %v", err)
	}
	if list, _ := a.Sessions(ctx, "ada"); len(list) != 3 {
		t.Fatalf("bob's Revoke changed ada's sessions: %d left", len(list))
	}

	// Revoke device 0: refused everywhere, the other two still work.
	if err := a.Revoke(ctx, "ada", handles[0]); err != nil {
		t.Fatal(err)
	}
	if err := a.Revoke(ctx, "ada", handles[0]); err != nil {
		t.Fatalf("second Revoke: %v", err)
	}
	if err := a.Revoke(ctx, "ada", "not a handle"); !errors.Is(err, pgsession.ErrInvalidID) {
		t.Fatalf("Revoke of a malformed handle: %v", err)
	}
	for i, s := range stores {
		waitFor(t, fmt.Sprintf("instance %d to refuse the revoked device", i), func() bool { return get(t, s, cookies[0]).IsNew })
		for _, ck := range cookies[1:] {
			if get(t, s, ck).IsNew {
				t.Fatalf("instance %d: a device not revoked was logged out", i)
			}
		}
	}
	if st := a.Stats(); st.Revocations != 1 {
		t.Fatalf("Revocations %d, want 1", st.Revocations)
	}

	// LogoutOthers from device 1 keeps only device 1.
	n, err := b.LogoutOthers(ctx, get(t, b, cookies[1]))
	if err != nil || n != 1 {
		t.Fatalf("LogoutOthers: %d, %v; want 1", n, err)
	}
	for i, s := range stores {
		waitFor(t, fmt.Sprintf("instance %d to refuse device 2", i), func() bool { return get(t, s, cookies[2]).IsNew })
		if get(t, s, cookies[1]).IsNew {
			t.Fatalf("instance %d: LogoutOthers logged out the current session", i)
		}
	}

	// LogoutUser ends the rest, also a request under way.
	inFlight := get(t, c, cookies[1])
	n, err = a.LogoutUser(ctx, "ada")
	if err != nil || n != 1 {
		t.Fatalf("LogoutUser: %d, %v; want 1", n, err)
	}
	inFlight.Values["late"] = true
	if err := c.Save(request(nil), httptest.NewRecorder(), inFlight); !errors.Is(err, pgsession.ErrDeleted) {
		t.Fatalf("Save of a session logged out meanwhile: %v, want ErrDeleted", err)
	}
	for i, s := range stores {
		waitFor(t, fmt.Sprintf("instance %d to refuse the last device", i), func() bool { return get(t, s, cookies[1]).IsNew })
	}
	if list, err := c.Sessions(ctx, "ada"); err != nil || len(list) != 0 {
		t.Fatalf("Sessions after LogoutUser: %v, %v", list, err)
	}
	if get(t, b, bobCookie).IsNew {
		t.Fatal("bob was logged out with ada")
	}
	// The tombstones keep no user.
	var users int
	if err := testDB.pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{cfg.Table}.Sanitize()+
		" WHERE deleted AND user_id IS NOT NULL").Scan(&users); err != nil || users != 0 {
		t.Fatalf("%d tombstones with a user (%v)", users, err)
	}
}

// TestLogoutUserInBatches: more sessions than one batch, all logged out.
func TestLogoutUserInBatches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := userConfig(t)
	s := newStore(t, testDB.pool, cfg)
	_, ck := login(t, s, map[any]any{"uid": 7})
	sqlExec(t, "INSERT INTO "+pgx.Identifier{cfg.Table}.Sanitize()+` (key_hash, data, expires_at, user_id)
		SELECT sha256(i::text::bytea), '\x', now() + interval '1 hour', '7' FROM generate_series(1, 2500) i`)
	n, err := s.LogoutUser(ctx, "7")
	if err != nil || n != 2501 {
		t.Fatalf("LogoutUser: %d, %v; want 2501", n, err)
	}
	if !get(t, s, ck).IsNew {
		t.Fatal("the user's cookie still works")
	}
}

// TestSessionsIsAnIndexScan: listing a user's sessions reads the index
// on user_id, not the table.
func TestSessionsIsAnIndexScan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := userConfig(t)
	s := newStore(t, testDB.pool, cfg)
	table := pgx.Identifier{cfg.Table}.Sanitize()
	sqlExec(t, "INSERT INTO "+table+` (key_hash, data, expires_at, user_id)
		SELECT sha256(i::text::bytea), '\x', now() + interval '1 hour', CASE WHEN i % 3 = 0 THEN NULL ELSE (i % 5000)::text END
		FROM generate_series(1, 50000) i`)
	sqlExec(t, "ANALYZE "+table)
	rows, err := testDB.pool.Query(ctx, "EXPLAIN "+pgsession.SessionsSQL(s), "42")
	if err != nil {
		t.Fatal(err)
	}
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(plan, "\n")
	if strings.Contains(text, "Seq Scan") || !strings.Contains(text, "user_id_idx") {
		t.Fatalf("plan of Sessions:\n%s", text)
	}
	if list, err := s.Sessions(ctx, "42"); err != nil || len(list) == 0 {
		t.Fatalf("Sessions: %d, %v", len(list), err)
	}
}

func TestUserAPINeedsUserKey(t *testing.T) {
	t.Parallel()
	s := newStore(t, testDB.pool, testConfig(t))
	if _, err := s.Sessions(context.Background(), "ada"); !errors.Is(err, pgsession.ErrInvalidConfig) {
		t.Fatalf("Sessions without UserKey: %v", err)
	}
	if _, err := s.LogoutUser(context.Background(), "ada"); !errors.Is(err, pgsession.ErrInvalidConfig) {
		t.Fatalf("LogoutUser without UserKey: %v", err)
	}
}

// TestRecordClient: the client's IP and User-Agent are kept with the
// session and listed; a logout erases them.
func TestRecordClient(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := userConfig(t)
	cfg.RecordClient = true
	s := newStore(t, testDB.pool, cfg)
	sess := get(t, s, nil)
	sess.Values["uid"] = "ada"
	r := request(nil)
	r.RemoteAddr = "[2001:db8::7]:51234"
	r.Header.Set("User-Agent", "TestAgent/1.0 "+strings.Repeat("x", 1000))
	w := httptest.NewRecorder()
	if err := s.Save(r, w, sess); err != nil {
		t.Fatal(err)
	}
	list, err := s.Sessions(ctx, "ada")
	if err != nil || len(list) != 1 {
		t.Fatalf("Sessions: %v, %v", list, err)
	}
	if si := list[0]; si.ClientIP != "2001:db8::7" || !strings.HasPrefix(si.UserAgent, "TestAgent/1.0 ") || len(si.UserAgent) != 512 {
		t.Fatalf("client %q, agent of %d bytes %.20q", si.ClientIP, len(si.UserAgent), si.UserAgent)
	}
	logout(t, s, responseCookie(t, w))
	var kept int
	if err := testDB.pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{cfg.Table}.Sanitize()+
		" WHERE client_ip IS NOT NULL OR user_agent IS NOT NULL").Scan(&kept); err != nil || kept != 0 {
		t.Fatalf("%d rows keep client data after the logout (%v)", kept, err)
	}

	// Without RecordClient nothing is kept.
	off := userConfig(t)
	s2 := newStore(t, testDB.pool, off)
	sess = get(t, s2, nil)
	sess.Values["uid"] = "bob"
	if err := s2.Save(r, httptest.NewRecorder(), sess); err != nil {
		t.Fatal(err)
	}
	if list, _ := s2.Sessions(ctx, "bob"); len(list) != 1 || list[0].ClientIP != "" || list[0].UserAgent != "" {
		t.Fatalf("without RecordClient: %+v", list)
	}
}
