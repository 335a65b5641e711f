// Command echo is a small Echo application on pgsession, made to be
// copied: log in, see who you are and a one-time flash message, log out.
// echo-contrib's session middleware takes the Store as it is, and
// Store.AutoSave, wrapped with echo.WrapMiddleware, saves what handlers
// changed: they never call Save.
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

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo-contrib/session"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

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
// handler, and a cleanup that closes the store (the pool stays the
// caller's).
func newApp(ctx context.Context, pool *pgxpool.Pool, cfg pgsession.Config) (http.Handler, func(), error) {
	store, err := pgsession.New(ctx, pool, cfg)
	if err != nil {
		return nil, nil, err
	}
	a := &app{store: store}

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	// Recover goes outside AutoSave: a panicking handler's session changes
	// are dropped, not saved with the 500.
	e.Use(middleware.Recover())
	e.Use(echo.WrapMiddleware(store.AutoSave))
	e.Use(session.Middleware(store))
	e.GET("/", a.home)
	e.POST("/login", a.login)
	e.POST("/logout", a.logout)
	// CrossOriginProtection turns away cross-site POSTs (CSRF).
	return http.NewCrossOriginProtection().Handler(e), func() { store.Close() }, nil
}

type app struct {
	store *pgsession.Store
}

func (a *app) home(c echo.Context) error {
	sess, err := session.Get(sessionName, c)
	if err != nil {
		return unavailable(err)
	}
	var b strings.Builder
	for _, f := range sess.Flashes() { // read once: AutoSave stores them gone
		fmt.Fprintln(&b, f)
	}
	if user, ok := sess.Values["user"].(string); ok {
		fmt.Fprintf(&b, "Hello, %s.\n", user)
	} else {
		fmt.Fprintln(&b, "Not logged in.")
	}
	return c.String(http.StatusOK, b.String())
}

func (a *app) login(c echo.Context) error {
	user := strings.TrimSpace(c.FormValue("user"))
	if user == "" {
		return echo.NewHTTPError(http.StatusBadRequest, "user is required")
	}
	sess, err := session.Get(sessionName, c)
	if err != nil {
		return unavailable(err)
	}
	sess.Values["user"] = user
	sess.AddFlash("Welcome, " + user + "!")
	// A new token at login: one planted before it (session fixation) is
	// worth nothing. Regenerate saves; AutoSave then has nothing to do.
	if err := a.store.Regenerate(c.Request(), c.Response(), sess); err != nil {
		sess.Options.MaxAge = -1 // not logged in under the old token
		return unavailable(err)
	}
	return c.Redirect(http.StatusSeeOther, "/")
}

func (a *app) logout(c echo.Context) error {
	sess, err := session.Get(sessionName, c)
	if err != nil {
		// Without the session the logout cannot reach the database:
		// say so rather than only dropping the cookie.
		return unavailable(err)
	}
	sess.Options.MaxAge = -1 // AutoSave deletes it, on every instance
	return c.Redirect(http.StatusSeeOther, "/")
}

func unavailable(err error) error {
	slog.Error("session store", "err", err)
	return echo.NewHTTPError(http.StatusServiceUnavailable, "sessions are unavailable, try again later").SetInternal(err)
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
