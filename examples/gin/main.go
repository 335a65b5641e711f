// Command gin is a small Gin application on pgsession, made to be copied:
// log in, see who you are and a one-time flash message, log out. It uses
// gin-contrib/sessions, through the small adapter in adapter.go that its
// Store interface needs; as gin-contrib has it, handlers call Save.
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

	"github.com/gin-contrib/sessions"
	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgsession/pgsession"
)

const sessionName = "session"

func main() {
	gin.SetMode(gin.ReleaseMode)
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
	a := &app{store: newGinStore(store)}

	r := gin.New()
	r.Use(gin.Recovery())
	r.Use(sessions.Sessions(sessionName, a.store))
	r.GET("/", a.home)
	r.POST("/login", a.login)
	r.POST("/logout", a.logout)
	// CrossOriginProtection turns away cross-site POSTs (CSRF).
	return http.NewCrossOriginProtection().Handler(r), func() { store.Close() }, nil
}

type app struct {
	store *ginStore
}

func (a *app) home(c *gin.Context) {
	session := sessions.Default(c)
	var b strings.Builder
	flashes := session.Flashes()
	for _, f := range flashes {
		fmt.Fprintln(&b, f)
	}
	if user, ok := session.Get("user").(string); ok {
		fmt.Fprintf(&b, "Hello, %s.\n", user)
	} else {
		fmt.Fprintln(&b, "Not logged in.")
	}
	if len(flashes) > 0 { // read once: store them gone
		if err := session.Save(); err != nil {
			unavailable(c, err)
			return
		}
	}
	c.String(http.StatusOK, b.String())
}

func (a *app) login(c *gin.Context) {
	user := strings.TrimSpace(c.PostForm("user"))
	if user == "" {
		c.String(http.StatusBadRequest, "user is required")
		return
	}
	gs, err := a.store.session(c, sessionName)
	if err != nil {
		unavailable(c, err)
		return
	}
	session := sessions.Default(c) // the same session as gs
	session.Set("user", user)
	session.AddFlash("Welcome, " + user + "!")
	// A new token at login: one planted before it (session fixation) is
	// worth nothing. Regenerate saves, so no session.Save here.
	if err := a.store.Regenerate(c.Request, c.Writer, gs); err != nil {
		unavailable(c, err)
		return
	}
	c.Redirect(http.StatusSeeOther, "/")
}

func (a *app) logout(c *gin.Context) {
	gs, err := a.store.session(c, sessionName)
	if err != nil {
		// Without the session the logout cannot reach the database:
		// say so rather than only dropping the cookie.
		unavailable(c, err)
		return
	}
	// MaxAge < 0 deletes it, on every instance. (gin-contrib's
	// session.Options would replace every attribute, Path included.)
	gs.Options.MaxAge = -1
	if err := gs.Save(c.Request, c.Writer); err != nil {
		unavailable(c, err)
		return
	}
	c.Redirect(http.StatusSeeOther, "/")
}

func unavailable(c *gin.Context, err error) {
	slog.Error("session store", "err", err)
	c.String(http.StatusServiceUnavailable, "sessions are unavailable, try again later")
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
