// Command chi is a small go-chi application on pgsession, made to be
// copied: log in, see who you are and a one-time flash message, log out.
// Store.AutoSave is an ordinary chi middleware: handlers never call Save.
//
//	go run .
//	curl -c jar -b jar -L -d user=ada http://127.0.0.1:8080/login
//	curl -c jar -b jar http://127.0.0.1:8080/
//	curl -c jar -b jar -L -d '' http://127.0.0.1:8080/logout
//
// Environment: DATABASE_URL (default
// postgres://postgres@127.0.0.1:5432/postgres); SESSION_KEY, at least 64
// hex digits (default: a random key, so sessions end with the process);
// ADDR (default 127.0.0.1:8080); COOKIE_SECURE=true behind HTTPS.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgsession/pgsession"
)

const sessionName = "session"

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	pool, err := pgxpool.New(ctx, env("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"))
	if err != nil {
		return err
	}
	defer pool.Close()
	key, err := sessionKey()
	if err != nil {
		return err
	}
	cookie := pgsession.DefaultCookie() // 30 days, HttpOnly, SameSite Lax
	cookie.Secure = os.Getenv("COOKIE_SECURE") == "true"
	app, cleanup, err := newApp(ctx, pool, pgsession.Config{
		KeyPairs: [][]byte{key},
		Cookie:   cookie,
		Logger:   slog.Default(),
	})
	if err != nil {
		return err
	}
	defer cleanup()

	srv := &http.Server{Addr: env("ADDR", "127.0.0.1:8080"), Handler: app, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	log.Printf("listening on http://%s", srv.Addr)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// newApp opens the session store on pool and returns the application's
// router, and a cleanup that closes the store (the pool stays the
// caller's).
func newApp(ctx context.Context, pool *pgxpool.Pool, cfg pgsession.Config) (http.Handler, func(), error) {
	store, err := pgsession.New(ctx, pool, cfg)
	if err != nil {
		return nil, nil, err
	}
	a := &app{store: store}

	r := chi.NewRouter()
	// Recoverer goes outside AutoSave: a panicking handler's session
	// changes are dropped, not saved with the 500.
	r.Use(middleware.Recoverer)
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok") // no sessions here, so no AutoSave either
	})
	r.Group(func(r chi.Router) {
		r.Use(store.AutoSave)
		r.Get("/", a.home)
		r.Post("/login", a.login)
		r.Post("/logout", a.logout)
	})
	// CrossOriginProtection turns away cross-site POSTs (CSRF).
	return http.NewCrossOriginProtection().Handler(r), func() { store.Close() }, nil
}

type app struct {
	store *pgsession.Store
}

func (a *app) home(w http.ResponseWriter, r *http.Request) {
	session, err := a.store.Get(r, sessionName)
	if err != nil {
		unavailable(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	for _, f := range session.Flashes() { // read once: AutoSave stores them gone
		fmt.Fprintln(w, f)
	}
	if user, ok := session.Values["user"].(string); ok {
		fmt.Fprintf(w, "Hello, %s.\n", user)
	} else {
		fmt.Fprintln(w, "Not logged in.")
	}
}

func (a *app) login(w http.ResponseWriter, r *http.Request) {
	user := strings.TrimSpace(r.FormValue("user"))
	if user == "" {
		http.Error(w, "user is required", http.StatusBadRequest)
		return
	}
	session, err := a.store.Get(r, sessionName)
	if err != nil {
		unavailable(w, err)
		return
	}
	session.Values["user"] = user
	session.AddFlash("Welcome, " + user + "!")
	// A new token at login: one planted before it (session fixation) is
	// worth nothing. Regenerate saves; AutoSave then has nothing to do.
	if err := a.store.Regenerate(r, w, session); err != nil {
		session.Options.MaxAge = -1 // not logged in under the old token
		unavailable(w, err)
		return
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (a *app) logout(w http.ResponseWriter, r *http.Request) {
	session, err := a.store.Get(r, sessionName)
	if err != nil {
		// Without the session the logout cannot reach the database:
		// say so rather than only dropping the cookie.
		unavailable(w, err)
		return
	}
	session.Options.MaxAge = -1 // AutoSave deletes it, on every instance
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func unavailable(w http.ResponseWriter, err error) {
	slog.Error("session store", "err", err)
	http.Error(w, "sessions are unavailable, try again later", http.StatusServiceUnavailable)
}

// sessionKey returns SESSION_KEY, hex-decoded, or a random key.
func sessionKey() ([]byte, error) {
	s := os.Getenv("SESSION_KEY")
	if s == "" {
		log.Print("SESSION_KEY is not set: using a random key, so sessions end with this process")
		key := make([]byte, 32)
		_, err := rand.Read(key)
		return key, err
	}
	key, err := hex.DecodeString(s)
	if err != nil || len(key) < 32 {
		return nil, errors.New("SESSION_KEY must be at least 64 hex digits (openssl rand -hex 32)")
	}
	return key, nil
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
