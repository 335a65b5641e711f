package pgsession_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/sessions"

	"github.com/pgsession/pgsession"
)

// throwawayServer is a PostgreSQL server of the test's own, made with the
// installed binaries, that the test may stop and start.
type throwawayServer struct {
	t      testing.TB
	bindir string
	dir    string
	port   int
	cred   *syscall.Credential // run as postgres when we are root
}

// pgBindir finds initdb and pg_ctl: pg_config --bindir, else Debian's layout.
func pgBindir() (string, error) {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Strings(dirs)
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "initdb")); err == nil {
			return dirs[i], nil
		}
	}
	return "", fmt.Errorf("no initdb: install PostgreSQL's server binaries (Debian: postgresql)")
}

func newThrowawayServer(t testing.TB) *throwawayServer {
	t.Helper()
	bindir, err := pgBindir()
	if err != nil {
		t.Fatalf("this test runs its own PostgreSQL server: %v", err)
	}
	dir, err := os.MkdirTemp("", "pgsession-server-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &throwawayServer{t: t, bindir: bindir, dir: dir, port: freePort(t)}
	s.cred = postgresCredential(t, "initdb", dir) // initdb refuses to run as root
	s.run("initdb", "-D", s.data(), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
	s.Start()
	t.Cleanup(func() { s.pgctl("stop", "-m", "immediate") })
	return s
}

// postgresCredential returns, when the tests run as root, the credential
// of the postgres user, for the servers that refuse to run as root (what
// names which), and gives it dir; nil otherwise.
func postgresCredential(t testing.TB, what, dir string) *syscall.Credential {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("running as root needs a postgres user for %s: %v", what, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (s *throwawayServer) data() string { return filepath.Join(s.dir, "data") }

func (s *throwawayServer) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
}

func (s *throwawayServer) run(name string, args ...string) error {
	cmd := exec.Command(filepath.Join(s.bindir, name), args...)
	cmd.Dir = s.dir
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		err = fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		if name == "initdb" {
			s.t.Fatal(err)
		}
	}
	return err
}

func (s *throwawayServer) pgctl(args ...string) error {
	return s.run("pg_ctl", append([]string{"-D", s.data(), "-w", "-t", "60"}, args...)...)
}

// Start starts the server and waits until it accepts connections.
func (s *throwawayServer) Start() {
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=50", s.port, s.dir)
	if err := s.pgctl("start", "-l", filepath.Join(s.dir, "log"), "-o", opts); err != nil {
		s.t.Fatal(err)
	}
}

// Crash stops the server at once, as a crash would (recovery on restart).
func (s *throwawayServer) Crash() {
	if err := s.pgctl("stop", "-m", "immediate"); err != nil {
		s.t.Fatal(err)
	}
}

func TestPostgresRestartUnderLoad(t *testing.T) {
	t.Parallel()
	srv := newThrowawayServer(t)
	cfg := pgsession.Config{KeyPairs: [][]byte{hashKey}, Table: "sessions", ListenLease: time.Second}
	a := newStore(t, newPool(t, srv.URL()), cfg)
	b := newStore(t, newPool(t, srv.URL()), cfg)

	type client struct {
		sess   *sessions.Session
		cookie *http.Cookie
		acked  int // last acknowledged value
		tried  int // last value tried
	}
	const nClients = 4
	clients := make([]*client, nClients)
	for i := range clients {
		s, c := login(t, a, map[any]any{"n": 0})
		clients[i] = &client{sess: s, cookie: c}
	}

	var (
		down                atomic.Bool // set after the server is down, cleared before it starts
		wrongSuccess, stale atomic.Int64
		failedDuringOutage  atomic.Int64
		stop                = make(chan struct{})
		wg                  sync.WaitGroup
	)
	for _, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				cl.tried++
				cl.sess.Values["n"] = cl.tried
				wasDown := down.Load()
				w := httptest.NewRecorder()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := a.Save(request(nil).WithContext(ctx), w, cl.sess)
				cancel()
				if err != nil {
					if wasDown {
						failedDuringOutage.Add(1)
					}
					time.Sleep(5 * time.Millisecond) // pace retries while the server is away
					continue
				}
				if wasDown && down.Load() {
					wrongSuccess.Add(1) // acknowledged while the server was down
				}
				cl.acked = cl.tried
				cl.cookie = responseCookie(t, w)
				got, err := b.Get(request(cl.cookie), cookieName)
				if err == nil && got.Values["n"] != cl.acked {
					stale.Add(1)
				}
			}
		}()
	}

	waitFor(t, "load before the crash", func() bool { return a.Stats().Saves > 50 })
	srv.Crash()
	down.Store(true)
	waitFor(t, "saves to fail during the outage", func() bool { return failedDuringOutage.Load() >= nClients })
	waitFor(t, "b's listener to notice", func() bool { return b.Stats().Listener == pgsession.ListenerDown })
	down.Store(false)
	srv.Start()
	savesAfter := a.Stats().Saves
	waitFor(t, "saves to succeed again", func() bool { return a.Stats().Saves > savesAfter+50 })
	waitFor(t, "b's listener to come back", func() bool {
		st := b.Stats()
		return st.Listener == pgsession.ListenerUp && st.ListenerReconnects >= 1
	})
	close(stop)
	wg.Wait()

	if wrongSuccess.Load() != 0 || stale.Load() != 0 {
		t.Fatalf("%d saves acknowledged while the server was down, %d stale reads", wrongSuccess.Load(), stale.Load())
	}
	cold := newStore(t, newPool(t, srv.URL()), cfg)
	for i, cl := range clients {
		got := get(t, cold, cl.cookie).Values["n"].(int)
		// A save that failed may still have committed, so the stored value
		// can be newer than the last acknowledged one, never older.
		if got < cl.acked || got > cl.tried {
			t.Fatalf("client %d: stored n=%d, last acknowledged %d, last tried %d", i, got, cl.acked, cl.tried)
		}
	}
}
