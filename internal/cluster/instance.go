// Package cluster runs several application instances, each an OS process
// with its own pool and pgsession Store on one database, and drives
// sessions across them while checking that no client ever reads stale
// data. It backs the examples/cluster demo and the multi-process tests.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgsession/pgsession"
)

// Environment of an instance process.
const (
	envInstance = "PGSESSION_CLUSTER_INSTANCE" // set: this process is an instance
	envURL      = "PGSESSION_CLUSTER_DATABASE_URL"
	envTable    = "PGSESSION_CLUSTER_TABLE"
	envKey      = "PGSESSION_CLUSTER_KEY"
)

const cookieName = "sid"

// IsInstance reports whether this process was started as an instance.
func IsInstance() bool { return os.Getenv(envInstance) != "" }

// RunInstance serves one instance until its standard input closes or it is
// signalled, and returns the process exit code. The listening address is
// the first line it writes to standard output.
func RunInstance() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { // the parent going away closes our stdin
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop()
	}()
	if err := serve(ctx, log); err != nil {
		log.Error("instance failed", "err", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, log *slog.Logger) error {
	pool, err := pgxpool.New(ctx, os.Getenv(envURL))
	if err != nil {
		return err
	}
	defer pool.Close()
	store, err := pgsession.New(ctx, pool, pgsession.Config{
		KeyPairs: [][]byte{[]byte(os.Getenv(envKey))},
		Table:    os.Getenv(envTable),
		Logger:   log,
	})
	if err != nil {
		return err
	}
	defer store.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	app := &app{store: store}
	srv := &http.Server{Handler: app.routes(), ReadHeaderTimeout: 5 * time.Second}
	fmt.Printf("LISTENING %s\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// app is the demo application: a counter per logged-in session.
type app struct {
	store    *pgsession.Store
	requests atomic.Int64
}

// Reply is what every endpoint answers.
type Reply struct {
	LoggedIn bool   `json:"logged_in"`
	User     string `json:"user,omitempty"`
	N        int    `json:"n"`
}

// InstanceStats is what /stats answers.
type InstanceStats struct {
	Requests int64           `json:"requests"`
	Store    pgsession.Stats `json:"store"`
}

func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /login", a.handle(func(w http.ResponseWriter, r *http.Request) (Reply, error) {
		s, _ := a.store.New(r, cookieName) // clients log in without a cookie: a new session
		s.Values["user"] = r.FormValue("user")
		s.Values["n"] = 0
		return Reply{LoggedIn: true, User: r.FormValue("user")}, s.Save(r, w)
	}))
	mux.HandleFunc("GET /get", a.handle(func(w http.ResponseWriter, r *http.Request) (Reply, error) {
		s, err := a.store.Get(r, cookieName)
		return reply(s.Values), err
	}))
	mux.HandleFunc("POST /set", a.handle(func(w http.ResponseWriter, r *http.Request) (Reply, error) {
		s, err := a.store.Get(r, cookieName)
		if err != nil {
			return Reply{}, err
		}
		if _, ok := s.Values["user"]; !ok {
			return Reply{}, errNotLoggedIn
		}
		n, err := strconv.Atoi(r.FormValue("n"))
		if err != nil {
			return Reply{}, err
		}
		s.Values["n"] = n
		return reply(s.Values), s.Save(r, w)
	}))
	mux.HandleFunc("POST /logout", a.handle(func(w http.ResponseWriter, r *http.Request) (Reply, error) {
		s, err := a.store.Get(r, cookieName)
		if err != nil {
			return Reply{}, err
		}
		s.Options.MaxAge = -1
		return Reply{}, s.Save(r, w)
	}))
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(InstanceStats{Requests: a.requests.Load(), Store: a.store.Stats()})
	})
	return mux
}

var errNotLoggedIn = errors.New("not logged in")

func reply(v map[any]any) Reply {
	user, ok := v["user"].(string)
	n, _ := v["n"].(int)
	return Reply{LoggedIn: ok, User: user, N: n}
}

func (a *app) handle(h func(http.ResponseWriter, *http.Request) (Reply, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a.requests.Add(1)
		rep, err := h(w, r)
		switch {
		case errors.Is(err, errNotLoggedIn):
			http.Error(w, err.Error(), http.StatusUnauthorized)
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		default:
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(rep)
		}
	}
}
