package pgsession

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/sessions"
)

// TestWriteCookieAsNetHTTP: the Set-Cookie header the store renders from
// its reused attributes is byte for byte what
// http.SetCookie(w, sessions.NewCookie(...)) renders, for any options,
// also when they change from one call to the next and across seconds.
func TestWriteCookieAsNetHTTP(t *testing.T) {
	out := log.Writer()
	log.SetOutput(io.Discard) // net/http logs the attributes it drops
	defer log.SetOutput(out)
	const value = "MTc2NDY3MTUxMnxCUHpMaTdTWkNfUGJfOHZ6dVZ5TlE9PXwU2WmaFIyDx0KCAYbkOqAF5Jhf1tOg-7WS4mH3A6kfQg=="
	opts := []sessions.Options{
		{Path: "/", MaxAge: 86400 * 30, HttpOnly: true, SameSite: http.SameSiteLaxMode},
		{Path: "/", MaxAge: 0},
		{Path: "/app", Domain: "example.com", MaxAge: 3600, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode},
		{MaxAge: 60, Secure: true, Partitioned: true, SameSite: http.SameSiteNoneMode},
		{Path: "/a;b", Domain: "bad domain", MaxAge: 1, SameSite: http.SameSiteDefaultMode},
		{Path: "/", MaxAge: 1 << 40},
	}
	names := []string{"session", "__Host-sid", "bad name", ""}
	s := &Store{}
	for _, name := range names {
		for i := range opts {
			o := opts[i]
			for range 10 { // until both render within one second
				start := time.Now().Unix()
				w := httptest.NewRecorder()
				s.writeCookie(w, name, value, &o)
				want := httptest.NewRecorder()
				http.SetCookie(want, sessions.NewCookie(name, value, &o))
				if time.Now().Unix() != start {
					continue
				}
				checkSetCookie(t, w, want, name, o)
				break
			}
			// Later seconds, and back: Expires follows the clock.
			now := time.Now()
			for _, d := range []time.Duration{time.Second, 90 * time.Second, time.Second, 0} {
				at := now.Add(d)
				w := httptest.NewRecorder()
				s.writeCookieAt(w, name, value, &o, at)
				c := sessions.NewCookie(name, value, &o)
				if o.MaxAge > 0 {
					c.Expires = at.Add(time.Duration(o.MaxAge) * time.Second) // NewCookie at that time
				}
				want := httptest.NewRecorder()
				http.SetCookie(want, c)
				checkSetCookie(t, w, want, name, o)
			}
		}
	}
}

func checkSetCookie(t *testing.T, got, want *httptest.ResponseRecorder, name string, o sessions.Options) {
	t.Helper()
	g, w := got.Header()["Set-Cookie"], want.Header()["Set-Cookie"]
	if len(g) != len(w) || len(g) == 1 && g[0] != w[0] {
		t.Fatalf("name %q, options %+v:\n got %q\nwant %q", name, o, g, w)
	}
}
