package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/gin-contrib/sessions"
	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgsession/pgsession"
)

// The test's database: PGSESSION_TEST_DATABASE_URL, else DATABASE_URL,
// else the local server.
func databaseURL() string {
	for _, v := range []string{"PGSESSION_TEST_DATABASE_URL", "DATABASE_URL"} {
		if u := os.Getenv(v); u != "" {
			return u
		}
	}
	return "postgres://postgres@127.0.0.1:5432/postgres"
}

func TestMain(m *testing.M) {
	gin.SetMode(gin.TestMode)
	os.Exit(m.Run())
}

// testConfig returns a Config on a session table of the test's own,
// dropped at the end, and a pool closed at the end.
func testConfig(t *testing.T) (*pgxpool.Pool, pgsession.Config) {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, databaseURL())
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		t.Fatalf("no PostgreSQL at %s (set DATABASE_URL): %v", databaseURL(), err)
	}
	t.Cleanup(pool.Close)

	var b [6]byte
	_, _ = rand.Read(b[:])
	table := "example_gin_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		// The table, and the trigger function New made for it.
		_, err := pool.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{table}.Sanitize()+
			"; DROP FUNCTION IF EXISTS "+pgx.Identifier{table + "_notify"}.Sanitize()+"()")
		if err != nil {
			t.Errorf("drop %s: %v", table, err)
		}
	})
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return pool, pgsession.Config{KeyPairs: [][]byte{key}, Table: table}
}

// startApp serves the application on a test server.
func startApp(t *testing.T) *httptest.Server {
	t.Helper()
	pool, cfg := testConfig(t)
	app, cleanup, err := newApp(context.Background(), pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanup)
	srv := httptest.NewServer(app)
	t.Cleanup(srv.Close)
	return srv
}

// The adapter's Options sets the cookie attributes of new sessions, as
// given.
func TestGinStoreOptions(t *testing.T) {
	pool, cfg := testConfig(t)
	store, err := pgsession.New(context.Background(), pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	s := newGinStore(store)
	s.Options(sessions.Options{Path: "/app", MaxAge: 60, HttpOnly: true})

	r := httptest.NewRequest(http.MethodGet, "/app", nil)
	session, err := s.Get(r, sessionName)
	if err != nil {
		t.Fatal(err)
	}
	session.Values["user"] = "ada"
	w := httptest.NewRecorder()
	if err := session.Save(r, w); err != nil {
		t.Fatal(err)
	}
	c := w.Result().Cookies()
	if len(c) != 1 || c[0].Path != "/app" || c[0].MaxAge != 60 || !c[0].HttpOnly || c[0].SameSite != 0 {
		t.Fatalf("cookies %+v, want Path /app, MaxAge 60, HttpOnly and nothing else", c)
	}
	if again, _ := s.Get(r, sessionName); again != session {
		t.Fatal("a second Get in the request returned another session")
	}
}

// browser is an HTTP client with a cookie jar.
type browser struct {
	t      *testing.T
	base   string
	client *http.Client
}

func newBrowser(t *testing.T, base string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: base, client: &http.Client{Jar: jar}}
}

// do sends req and returns the body of the reply, which must be 200 OK
// (after redirects).
func (b *browser) do(req *http.Request) string {
	b.t.Helper()
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b.t.Fatalf("%s %s: %s %q", req.Method, req.URL.Path, resp.Status, body)
	}
	return string(body)
}

func (b *browser) get(path string) string {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.base+path, nil)
	return b.do(req)
}

func (b *browser) post(path string, form url.Values) string {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

func (b *browser) cookies() []*http.Cookie {
	u, _ := url.Parse(b.base)
	return b.client.Jar.Cookies(u)
}

func TestLoginReadFlashLogout(t *testing.T) {
	srv := startApp(t)
	b := newBrowser(t, srv.URL)

	if body := b.get("/"); body != "Not logged in.\n" {
		t.Fatalf("anonymous: %q", body)
	}
	if c := b.cookies(); len(c) != 0 {
		t.Fatalf("an anonymous visit got cookies %v", c)
	}

	// The login redirects home, which shows the flash once.
	if body := b.post("/login", url.Values{"user": {"ada"}}); body != "Welcome, ada!\nHello, ada.\n" {
		t.Fatalf("after login: %q", body)
	}
	if body := b.get("/"); body != "Hello, ada.\n" {
		t.Fatalf("second read: %q (the flash must be gone)", body)
	}
	loggedIn := b.cookies()

	if body := b.post("/logout", nil); body != "Not logged in.\n" {
		t.Fatalf("after logout: %q", body)
	}

	// The cookie from before the logout is worth nothing now.
	replay := newBrowser(t, srv.URL)
	u, _ := url.Parse(srv.URL)
	replay.client.Jar.SetCookies(u, loggedIn)
	if body := replay.get("/"); body != "Not logged in.\n" {
		t.Fatalf("old cookie after logout: %q", body)
	}

	// A cross-site form post is turned away (CSRF).
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/login", strings.NewReader("user=eve"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site login: %s, want 403", resp.Status)
	}
}
