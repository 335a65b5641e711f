package pgsession_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgsession/pgsession"
)

// serveAuto serves h behind s.AutoSaveWith(opts) on a test server of its
// own, closed at cleanup.
func serveAuto(t *testing.T, s *pgsession.Store, opts pgsession.AutoSaveOptions, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(s.AutoSaveWith(h, opts))
	t.Cleanup(srv.Close)
	return srv
}

// fetch requests path from srv carrying cookie (if not nil) and returns
// the response, its body read.
func fetch(t *testing.T, srv *httptest.Server, path string, cookie *http.Cookie) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cookie != nil {
		req.AddCookie(&http.Cookie{Name: cookie.Name, Value: cookie.Value})
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// sessionCookies returns the session cookies a response sets.
func sessionCookies(resp *http.Response) []*http.Cookie {
	var cs []*http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == cookieName {
			cs = append(cs, c)
		}
	}
	return cs
}

// oneCookie returns the one session cookie resp sets, failing the test
// when it sets none or several.
func oneCookie(t *testing.T, resp *http.Response) *http.Cookie {
	t.Helper()
	cs := sessionCookies(resp)
	if len(cs) != 1 {
		t.Fatalf("response sets %d session cookies, want 1: %q", len(cs), resp.Header.Values("Set-Cookie"))
	}
	return cs[0]
}

// rows counts the rows of the session table, tombstones included.
func rows(t *testing.T, cfg pgsession.Config) int64 {
	t.Helper()
	var n int64
	err := testDB.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{cfg.Table}.Sanitize()).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// checkSessionHeaders checks that resp has "Vary: Cookie" once and,
// when it sets a session cookie, "Cache-Control: no-store".
func checkSessionHeaders(t *testing.T, resp *http.Response) {
	t.Helper()
	n := 0
	for _, v := range resp.Header.Values("Vary") {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "Cookie") {
				n++
			}
		}
	}
	if n != 1 {
		t.Errorf("Vary %q names Cookie %d times, want once", resp.Header.Values("Vary"), n)
	}
	noStore := strings.Contains(strings.Join(resp.Header.Values("Cache-Control"), ","), "no-store")
	if sets := len(sessionCookies(resp)) > 0; sets != noStore {
		t.Errorf("sets a session cookie: %v, but Cache-Control %q", sets, resp.Header.Values("Cache-Control"))
	}
}

func TestAutoSaveStoresWithoutSave(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := newStore(t, testDB.pool, cfg)
	type key struct{}
	srv := serveAuto(t, s, pgsession.AutoSaveOptions{}, func(w http.ResponseWriter, r *http.Request) {
		// A request derived with WithContext shares the session.
		r = r.WithContext(context.WithValue(r.Context(), key{}, "derived"))
		sess, err := s.Get(r, cookieName)
		if err != nil {
			t.Errorf("Get: %v", err)
		}
		sess.Values["user"] = "ada"
		w.Header().Set("Vary", "Accept-Encoding")
		w.Header().Set("Cache-Control", "private")
		fmt.Fprint(w, "welcome")
	})

	resp, body := fetch(t, srv, "/login", nil)
	if resp.StatusCode != http.StatusOK || body != "welcome" {
		t.Fatalf("login: %d %q", resp.StatusCode, body)
	}
	c := oneCookie(t, resp)
	checkSessionHeaders(t, resp)
	if v := resp.Header.Values("Vary"); len(v) != 2 || v[0] != "Accept-Encoding" {
		t.Errorf("Vary %q: the handler's own value must stay first", v)
	}
	if cc := resp.Header.Values("Cache-Control"); len(cc) != 2 || cc[0] != "private" {
		t.Errorf("Cache-Control %q: the handler's own value must stay", cc)
	}
	if st := s.Stats(); st.Saves != 1 {
		t.Fatalf("Saves = %d, want 1", st.Saves)
	}
	if got := get(t, s, c).Values["user"]; got != "ada" {
		t.Fatalf("stored user = %v, want ada", got)
	}
	if n := rows(t, cfg); n != 1 {
		t.Fatalf("%d rows, want 1", n)
	}
}

// The sessions are saved before the first output of any kind, and the
// response carries the cookie.
func TestAutoSaveBeforeFirstOutput(t *testing.T) {
	t.Parallel()
	outputs := map[string]func(w http.ResponseWriter){
		"WriteHeader": func(w http.ResponseWriter) { w.WriteHeader(http.StatusCreated) },
		"Write":       func(w http.ResponseWriter) { _, _ = w.Write([]byte("body")) },
		"Flush":       func(w http.ResponseWriter) { w.(http.Flusher).Flush() },
		"ResponseController.Flush": func(w http.ResponseWriter) {
			if err := http.NewResponseController(w).Flush(); err != nil {
				panic(err)
			}
		},
		"ReadFrom": func(w http.ResponseWriter) {
			_, _ = w.(io.ReaderFrom).ReadFrom(strings.NewReader("body"))
		},
		"io.Copy":         func(w http.ResponseWriter) { _, _ = io.Copy(w, io.LimitReader(strings.NewReader("body"), 4)) },
		"1xx, then Write": func(w http.ResponseWriter) { w.WriteHeader(http.StatusEarlyHints); _, _ = w.Write([]byte("body")) },
		"nothing":         func(http.ResponseWriter) {},
	}
	for name, output := range outputs {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, testDB.pool, testConfig(t))
			var savesAfter int64 = -1
			srv := serveAuto(t, s, pgsession.AutoSaveOptions{}, func(w http.ResponseWriter, r *http.Request) {
				sess, _ := s.Get(r, cookieName)
				sess.Values["n"] = 1
				output(w)
				savesAfter = s.Stats().Saves
			})
			resp, _ := fetch(t, srv, "/", nil)
			c := oneCookie(t, resp)
			checkSessionHeaders(t, resp)
			if name != "nothing" && savesAfter != 1 {
				t.Errorf("Saves right after the output = %d, want 1", savesAfter)
			}
			if got := get(t, s, c).Values["n"]; got != 1 {
				t.Fatalf("stored n = %v, want 1", got)
			}
			if st := s.Stats(); st.Saves != 1 {
				t.Fatalf("Saves = %d, want 1", st.Saves)
			}
		})
	}
}

func TestAutoSaveUnchangedCostsNothing(t *testing.T) {
	t.Parallel()
	s := newStore(t, testDB.pool, testConfig(t))
	srv := serveAuto(t, s, pgsession.AutoSaveOptions{}, func(w http.ResponseWriter, r *http.Request) {
		sess, _ := s.Get(r, cookieName)
		if r.URL.Path == "/login" {
			sess.Values["user"] = "ada"
		}
		fmt.Fprint(w, sess.Values["user"])
	})
	resp, _ := fetch(t, srv, "/login", nil)
	c := oneCookie(t, resp)
	for range 3 {
		resp, body := fetch(t, srv, "/", c)
		if body != "ada" {
			t.Fatalf("read: %q", body)
		}
		checkSessionHeaders(t, resp)
	}
	if st := s.Stats(); st.Saves != 1 || st.SavesSkipped != 3 || st.Refreshes != 0 {
		t.Fatalf("Saves %d, SavesSkipped %d, Refreshes %d; want 1, 3, 0", st.Saves, st.SavesSkipped, st.Refreshes)
	}
}

func TestAutoSaveEmptyNewSessionIsNotStored(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := newStore(t, testDB.pool, cfg)
	srv := serveAuto(t, s, pgsession.AutoSaveOptions{}, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/static" {
			fmt.Fprint(w, "no session")
			return
		}
		sess, _ := s.Get(r, cookieName)
		if sess.Values["user"] == nil {
			fmt.Fprint(w, "anonymous")
		}
	})
	resp, body := fetch(t, srv, "/", nil)
	if body != "anonymous" || len(resp.Header.Values("Set-Cookie")) != 0 {
		t.Fatalf("got %q with Set-Cookie %q, want anonymous and no cookie", body, resp.Header.Values("Set-Cookie"))
	}
	checkSessionHeaders(t, resp)
	if n := rows(t, cfg); n != 0 {
		t.Fatalf("%d rows, want 0", n)
	}

	// A response that obtained no session does not vary by cookie.
	resp, _ = fetch(t, srv, "/static", nil)
	if v := resp.Header.Values("Vary"); len(v) != 0 {
		t.Fatalf("Vary %q without a session", v)
	}
	if st := s.Stats(); st.Saves != 0 || st.SavesSkipped != 0 {
		t.Fatalf("Saves %d, SavesSkipped %d; want none", st.Saves, st.SavesSkipped)
	}
}

func TestAutoSaveMaxAgeNegativeDeletes(t *testing.T) {
	t.Parallel()
	s := newStore(t, testDB.pool, testConfig(t))
	srv := serveAuto(t, s, pgsession.AutoSaveOptions{}, func(w http.ResponseWriter, r *http.Request) {
		sess, _ := s.Get(r, cookieName)
		switch r.URL.Path {
		case "/login":
			sess.Values["user"] = "ada"
		case "/logout":
			sess.Options.MaxAge = -1
		case "/logout-explicitly":
			sess.Options.MaxAge = -1
			if err := sess.Save(r, w); err != nil {
				t.Errorf("explicit delete: %v", err)
			}
		}
		fmt.Fprint(w, sess.Values["user"])
	})
	for i, path := range []string{"/logout", "/logout-explicitly"} {
		resp, _ := fetch(t, srv, "/login", nil)
		c := oneCookie(t, resp)
		resp, _ = fetch(t, srv, path, c)
		if expired := oneCookie(t, resp); expired.MaxAge >= 0 || expired.Value != "" {
			t.Fatalf("%s: cookie %+v, want it expired", path, expired)
		}
		checkSessionHeaders(t, resp)
		if st := s.Stats(); st.Deletes != int64(i+1) {
			t.Fatalf("%s: Deletes = %d, want %d", path, st.Deletes, i+1)
		}
		if sess := get(t, s, c); !sess.IsNew {
			t.Fatalf("%s: the old cookie still reads %v", path, sess.Values)
		}

		// The logged-out cookie again: expired once more, nothing deleted.
		resp, _ = fetch(t, srv, path, c)
		if expired := oneCookie(t, resp); expired.MaxAge >= 0 {
			t.Fatalf("%s with a stale cookie: cookie %+v, want it expired", path, expired)
		}
		if st := s.Stats(); st.Deletes != int64(i+1) {
			t.Fatalf("%s with a stale cookie: Deletes = %d, want %d", path, st.Deletes, i+1)
		}
	}

	// Without a cookie, a logout sets none.
	resp, _ := fetch(t, srv, "/logout", nil)
	if v := resp.Header.Values("Set-Cookie"); len(v) != 0 {
		t.Fatalf("logout without a session sets %q", v)
	}
}

func TestAutoSaveAfterExplicitSaveIsNotRepeated(t *testing.T) {
	t.Parallel()
	s := newStore(t, testDB.pool, testConfig(t))
	srv := serveAuto(t, s, pgsession.AutoSaveOptions{}, func(w http.ResponseWriter, r *http.Request) {
		sess, _ := s.Get(r, cookieName)
		sess.Values["user"] = "ada"
		if err := sess.Save(r, w); err != nil {
			t.Errorf("Save: %v", err)
		}
		if r.URL.Path == "/change-after-save" {
			sess.Values["user"] = "grace"
		}
		fmt.Fprint(w, "ok")
	})

	resp, _ := fetch(t, srv, "/", nil)
	c := oneCookie(t, resp)
	checkSessionHeaders(t, resp)
	if st := s.Stats(); st.Saves != 1 || st.SavesSkipped != 1 {
		t.Fatalf("Saves %d, SavesSkipped %d; want 1, 1", st.Saves, st.SavesSkipped)
	}
	if got := get(t, s, c).Values["user"]; got != "ada" {
		t.Fatalf("user = %v", got)
	}

	// A change after the explicit Save is saved too, and the response
	// carries the newer cookie only.
	resp, _ = fetch(t, srv, "/change-after-save", c)
	c = oneCookie(t, resp)
	if got := get(t, s, c).Values["user"]; got != "grace" {
		t.Fatalf("user = %v, want the change made after the explicit Save", got)
	}
	if st := s.Stats(); st.Saves != 2 || st.SavesSkipped != 2 {
		t.Fatalf("Saves %d, SavesSkipped %d; want 2, 2", st.Saves, st.SavesSkipped)
	}
}

// A streaming handler: the session is saved before the first flush, the
// flush reaches the client while the handler still runs, and changes made
// after it are stored when the handler returns.
func TestAutoSaveStreaming(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.MaxLength = 100
	logs := &logCounter{}
	cfg.Logger = slog.New(logs)
	s := newStore(t, testDB.pool, cfg)
	headersSeen := make(chan struct{})
	srv := serveAuto(t, s, pgsession.AutoSaveOptions{}, func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if err := rc.SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
			t.Errorf("SetWriteDeadline through Unwrap: %v", err)
		}
		sess, _ := s.Get(r, cookieName)
		sess.Values["n"] = 1
		saves := s.Stats().Saves
		if err := rc.Flush(); err != nil { // the first output
			t.Errorf("Flush: %v", err)
		}
		if st := s.Stats(); st.Saves != saves+1 {
			t.Errorf("Saves after the flush = %d, want %d", st.Saves, saves+1)
		}
		fmt.Fprint(w, "first;")
		if err := rc.Flush(); err != nil {
			t.Errorf("Flush: %v", err)
		}
		<-headersSeen // the client has the headers: the flush went through

		sess.Values["n"] = 2 // stored when the handler returns
		if r.URL.Path == "/late" {
			late, _ := s.Get(r, "late")
			late.Values["x"] = 1 // a new session after the headers: not stored
		}
		if r.URL.Path == "/too-large" {
			sess.Values["n"] = strings.Repeat("x", 200) // fails: logged
		}
		fmt.Fprint(w, "second")
	})

	for _, path := range []string{"/late", "/too-large"} {
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		c := oneCookie(t, resp)
		checkSessionHeaders(t, resp)
		headersSeen <- struct{}{}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(body) != "first;second" {
			t.Fatalf("%s: body %q, %v", path, body, err)
		}
		if len(resp.Cookies()) != 1 {
			t.Fatalf("%s: cookies %v, want the session's only", path, resp.Cookies())
		}

		// The handler has returned once the body ended.
		want := 2
		if path == "/too-large" {
			want = 1
		}
		if got := get(t, s, c).Values["n"]; got != want {
			t.Fatalf("%s: stored n = %v, want %d", path, got, want)
		}
	}
	if st := s.Stats(); st.Saves != 3 {
		t.Fatalf("Saves = %d, want 3", st.Saves)
	}
	if n := logs.count(slog.LevelWarn, "after the response's headers went out"); n != 1 {
		t.Fatalf("%d warnings about the late session, want 1", n)
	}
	if n := logs.count(slog.LevelError, "automatic save failed"); n != 1 {
		t.Fatalf("%d errors logged for the late failure, want 1", n)
	}
}

func TestAutoSaveHijack(t *testing.T) {
	t.Parallel()
	s := newStore(t, testDB.pool, testConfig(t))
	srv := serveAuto(t, s, pgsession.AutoSaveOptions{}, func(w http.ResponseWriter, r *http.Request) {
		sess, _ := s.Get(r, cookieName)
		sess.Values["user"] = "ada"
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("Hijack: %v", err)
			return
		}
		defer conn.Close()
		// The session was saved before the hand-over; its cookie is in
		// Header() for a handler that wants to send it.
		brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n")
		w.Header().Write(brw)
		brw.WriteString("\r\nhijacked")
		brw.Flush()
	})
	resp, body := fetch(t, srv, "/", nil)
	if resp.StatusCode != http.StatusOK || body != "hijacked" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	c := oneCookie(t, resp)
	if got := get(t, s, c).Values["user"]; got != "ada" {
		t.Fatalf("user = %v", got)
	}
}

func TestAutoSavePanicSavesNothing(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := newStore(t, testDB.pool, cfg)
	_, c := login(t, s, map[any]any{"user": "ada"})
	type boom struct{}
	h := s.AutoSave(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess, _ := s.Get(r, cookieName)
		sess.Values["user"] = "eve"
		fresh, _ := s.Get(r, "other")
		fresh.Values["x"] = 1
		panic(boom{})
	}))
	rec := httptest.NewRecorder()
	func() {
		defer func() {
			if p := recover(); p != (boom{}) {
				t.Fatalf("recovered %v, want the handler's panic", p)
			}
		}()
		h.ServeHTTP(rec, request(c))
	}()
	if v := rec.Result().Header.Values("Set-Cookie"); len(v) != 0 {
		t.Fatalf("Set-Cookie %q after a panic", v)
	}
	if got := get(t, s, c).Values["user"]; got != "ada" {
		t.Fatalf("user = %v after a panic, want ada", got)
	}
	if st := s.Stats(); st.Saves != 1 {
		t.Fatalf("Saves = %d, want the login's only", st.Saves)
	}
	if n := rows(t, cfg); n != 1 {
		t.Fatalf("%d rows, want 1", n)
	}
}

func TestAutoSaveFailureAnswersThroughErrorHandler(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.MaxLength = 100
	logs := &logCounter{}
	cfg.Logger = slog.New(logs)
	s := newStore(t, testDB.pool, cfg)
	writeErrs := make(chan error, 2)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess, _ := s.Get(r, cookieName)
		sess.Values["big"] = strings.Repeat("x", 200)
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusCreated)
		_, err := fmt.Fprint(w, "the handler's body")
		writeErrs <- err
	})

	// The default: 500, and the handler's output is dropped.
	srv := httptest.NewServer(s.AutoSave(handler))
	t.Cleanup(srv.Close)
	resp, body := fetch(t, srv, "/", nil)
	if resp.StatusCode != http.StatusInternalServerError || strings.Contains(body, "handler") {
		t.Fatalf("got %d %q, want 500 without the handler's body", resp.StatusCode, body)
	}
	if err := <-writeErrs; err == nil {
		t.Fatal("the handler's Write after a failed save returned no error")
	}

	// A handler of the user's own.
	var got error
	srv = serveAuto(t, s, pgsession.AutoSaveOptions{
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			got = err
			http.Error(w, "session too large", http.StatusRequestEntityTooLarge)
		},
	}, handler)
	resp, body = fetch(t, srv, "/", nil)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || body != "session too large\n" {
		t.Fatalf("got %d %q from the custom error handler", resp.StatusCode, body)
	}
	if !errors.Is(got, pgsession.ErrTooLarge) {
		t.Fatalf("error handler got %v, want ErrTooLarge", got)
	}
	<-writeErrs
	if v := resp.Header.Values("Set-Cookie"); len(v) != 0 {
		t.Fatalf("Set-Cookie %q after a failed save", v)
	}
	if n := rows(t, cfg); n != 0 {
		t.Fatalf("%d rows, want 0", n)
	}
	if n := logs.count(slog.LevelError, "automatic save failed"); n != 2 {
		t.Fatalf("%d failures logged, want 2", n)
	}
}

// A session logged out while a request that loaded it ran stays logged
// out, and the request is answered as usual.
func TestAutoSaveLoggedOutMeanwhile(t *testing.T) {
	t.Parallel()
	s := newStore(t, testDB.pool, testConfig(t))
	_, c := login(t, s, map[any]any{"user": "ada"})
	srv := serveAuto(t, s, pgsession.AutoSaveOptions{}, func(w http.ResponseWriter, r *http.Request) {
		sess, _ := s.Get(r, cookieName)
		if err := s.Delete(r.Context(), sess.ID); err != nil {
			t.Errorf("Delete: %v", err)
		}
		sess.Values["cart"] = 3
		fmt.Fprint(w, "ok")
	})
	resp, body := fetch(t, srv, "/", c)
	if resp.StatusCode != http.StatusOK || body != "ok" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if sess := get(t, s, c); !sess.IsNew {
		t.Fatalf("the logout was undone: %v", sess.Values)
	}
}

// AutoSave saves only its own store's sessions, and wrapping twice is
// wrapping once.
func TestAutoSaveOwnStoreOnce(t *testing.T) {
	t.Parallel()
	a := newStore(t, testDB.pool, testConfig(t))
	b := newStore(t, testDB.pool, testConfig(t))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sa, _ := a.Get(r, cookieName)
		sa.Values["a"] = 1
		sb, _ := b.Get(r, "b")
		sb.Values["b"] = 1
		fmt.Fprint(w, "ok")
	})
	srv := httptest.NewServer(a.AutoSave(a.AutoSave(h)))
	t.Cleanup(srv.Close)
	resp, _ := fetch(t, srv, "/", nil)
	oneCookie(t, resp)
	checkSessionHeaders(t, resp)
	if len(resp.Cookies()) != 1 {
		t.Fatalf("cookies %v: b's session was saved by a's AutoSave", resp.Cookies())
	}
	if sa, sb := a.Stats(), b.Stats(); sa.Saves != 1 || sa.SavesSkipped != 0 || sb.Saves != 0 {
		t.Fatalf("a: Saves %d, SavesSkipped %d; b: Saves %d; want 1, 0, 0", sa.Saves, sa.SavesSkipped, sb.Saves)
	}

	// One AutoSave per store saves both.
	srv = httptest.NewServer(b.AutoSave(a.AutoSave(h)))
	t.Cleanup(srv.Close)
	resp, _ = fetch(t, srv, "/", nil)
	if len(resp.Cookies()) != 2 {
		t.Fatalf("cookies %v, want both sessions'", resp.Cookies())
	}
}

func TestDefaultCookie(t *testing.T) {
	t.Parallel()
	c := pgsession.DefaultCookie()
	c.Secure = true
	d := pgsession.DefaultCookie()
	if d.Secure || d == c {
		t.Fatal("DefaultCookie shares its result")
	}
	if d.Path != "/" || d.MaxAge != pgsession.DefaultCookieMaxAge || !d.HttpOnly || d.SameSite != http.SameSiteLaxMode || d.Domain != "" || d.Partitioned {
		t.Fatalf("DefaultCookie() = %+v", d)
	}

	cfg := testConfig(t)
	cfg.Cookie = c
	s := newStore(t, testDB.pool, cfg)
	_, got := login(t, s, map[any]any{"user": "ada"})
	if !got.Secure || !got.HttpOnly || got.SameSite != http.SameSiteLaxMode || got.MaxAge != pgsession.DefaultCookieMaxAge || got.Path != "/" {
		t.Fatalf("cookie %+v, want the defaults and Secure", got)
	}
}

func ExampleStore_AutoSave() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testDB.url) // your application's pool
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close()
	store, err := pgsession.New(ctx, pool, pgsession.Config{
		KeyPairs: [][]byte{[]byte("example-hash-key-of-32-bytes-or-more")},
		Table:    "example_autosave_sessions",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer store.Close()
	defer pool.Exec(ctx, "DROP TABLE example_autosave_sessions; DROP FUNCTION example_autosave_sessions_notify()")

	mux := http.NewServeMux()
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		session, _ := store.Get(r, "session")
		session.Values["user"] = "ada" // no Save: AutoSave saves it
		http.Redirect(w, r, "/", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		session, _ := store.Get(r, "session")
		fmt.Fprintf(w, "user=%v", session.Values["user"])
	})
	app := store.AutoSave(mux)

	rec := httptest.NewRecorder()
	app.ServeHTTP(rec, httptest.NewRequest("POST", "/login", nil))
	req := httptest.NewRequest("GET", "/", nil)
	for _, c := range rec.Result().Cookies() {
		req.AddCookie(c)
	}
	rec = httptest.NewRecorder()
	app.ServeHTTP(rec, req)
	fmt.Println(rec.Body.String(), rec.Header().Get("Vary"))
	// Output: user=ada Cookie
}
