package pgsession_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgsession/pgsession"
)

// startPgBouncer runs a PgBouncer of the test's own, in pool mode mode, in
// front of the test database, and returns a URL through it. It is stopped
// at cleanup.
func startPgBouncer(t testing.TB, mode string) string {
	t.Helper()
	requireDB(t)
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		for _, p := range []string{"/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"} {
			if _, err2 := os.Stat(p); err2 == nil {
				bin, err = p, nil
				break
			}
		}
	}
	if err != nil {
		t.Fatalf("this test runs its own PgBouncer and found none: install it (Debian: apt-get install pgbouncer); .ci/run does")
	}
	db, err := pgx.ParseConfig(testDB.url)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "pgsession-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	port := freePort(t)
	target := fmt.Sprintf("host=%s port=%d dbname=%s user=%s", db.Host, db.Port, db.Database, db.User)
	if db.Password != "" {
		target += " password=" + db.Password
	}
	ini := fmt.Sprintf(`[databases]
%s = %s
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = any
pool_mode = %s
max_client_conn = 500
default_pool_size = 20
logfile = %s
pidfile = %s
ignore_startup_parameters = extra_float_digits
`, db.Database, target, port, mode, filepath.Join(dir, "pgbouncer.log"), filepath.Join(dir, "pgbouncer.pid"))
	iniPath := filepath.Join(dir, "pgbouncer.ini")
	if err := os.WriteFile(iniPath, []byte(ini), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, iniPath)
	if cred := postgresCredential(t, "PgBouncer", dir); cred != nil { // PgBouncer refuses to run as root
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			t.Fatalf("PgBouncer did not start: %v\n%s", err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", db.User, port, db.Database)
}

// bouncerPool returns a pool through PgBouncer, set up as transaction
// pooling needs: no named prepared statements.
func bouncerPool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	return newPoolConfig(t, cfg)
}

// TestPgBouncerTransactionModeWithoutListenConnString: LISTEN through
// PgBouncer in transaction mode attaches to a server connection that is
// lent to others, so the listener hears nothing. New must say so, soon,
// instead of serving stale sessions forever.
func TestPgBouncerTransactionModeWithoutListenConnString(t *testing.T) {
	t.Parallel()
	pool := bouncerPool(t, startPgBouncer(t, "transaction"))
	cfg := testConfig(t)
	start := time.Now()
	s, err := pgsession.New(context.Background(), pool, cfg)
	if err == nil {
		s.Close()
		t.Fatal("New through PgBouncer in transaction mode without ListenConnString succeeded")
	}
	if !errors.Is(err, pgsession.ErrNotHeard) {
		t.Fatalf("New: %v; want ErrNotHeard", err)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("New took %v to fail", d)
	}
	t.Logf("New failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
}

// TestListenConnStringOnAnotherDatabase: a listener on another database of
// the same cluster hears nothing the pool's writes send.
func TestListenConnStringOnAnotherDatabase(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	other, err := pgx.ParseConfig(testDB.url)
	if err != nil {
		t.Fatal(err)
	}
	if other.Database == "postgres" {
		t.Fatal("the test database is postgres: this test needs another one to point ListenConnString at")
	}
	cfg.ListenConnString = fmt.Sprintf("postgres://%s:%s@%s:%d/postgres?sslmode=disable", other.User, other.Password, other.Host, other.Port)
	start := time.Now()
	s, err := pgsession.New(context.Background(), newPool(t, testDB.url), cfg)
	if err == nil {
		s.Close()
		t.Fatal("New with ListenConnString on another database succeeded")
	}
	if !errors.Is(err, pgsession.ErrNotHeard) || time.Since(start) > 8*time.Second {
		t.Fatalf("New after %v: %v; want ErrNotHeard within seconds", time.Since(start), err)
	}
}

// TestPgBouncerWithListenConnString is the documented set-up: the pool
// through PgBouncer in transaction mode, the listener direct. Two
// instances under concurrent load stay coherent.
func TestPgBouncerWithListenConnString(t *testing.T) {
	t.Parallel()
	url := startPgBouncer(t, "transaction")
	cfg := testConfig(t)
	cfg.ListenConnString = testDB.url
	a := newStore(t, bouncerPool(t, url), cfg)
	b := newStore(t, bouncerPool(t, url), cfg)

	// Load: clients log in on a and change their session on a, then read
	// on b. Every read on b must see the newest value once the write's
	// notification had its window; logouts must be refused on b.
	const clients, rounds = 8, 25
	var checked atomic.Int64
	wait := goEach(t, clients, func(i int) error {
		sess, c := login(t, a, map[any]any{"n": 0})
		for r := 1; r <= rounds; r++ {
			sess.Values["n"] = r
			if nc := save(t, a, sess); nc != nil {
				c = nc
			}
			ok := false
			deadline := time.Now().Add(2 * time.Second)
			for time.Now().Before(deadline) {
				got, err := b.Get(request(c), cookieName)
				if err != nil {
					return err
				}
				if got.Values["n"] == r {
					ok = true
					break
				}
				time.Sleep(time.Millisecond)
			}
			if !ok {
				return fmt.Errorf("client %d round %d: b never saw the write", i, r)
			}
			checked.Add(1)
		}
		logout(t, a, c)
		deadline := time.Now().Add(2 * time.Second)
		for {
			got, err := b.Get(request(c), cookieName)
			if err != nil {
				return err
			}
			if got.IsNew {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("client %d: b still serves the session 2s after logout", i)
			}
			time.Sleep(time.Millisecond)
		}
	})
	wait()
	if n := checked.Load(); n != clients*rounds {
		t.Fatalf("%d of %d reads checked", n, clients*rounds)
	}
	// b saw every change through a notification or the cookie's version.
	if st := b.Stats(); st.Listener != pgsession.ListenerUp || st.NotifyEvictions == 0 {
		t.Fatalf("b's stats: %+v", st)
	}
	if st := a.Stats(); st.Listener != pgsession.ListenerUp {
		t.Fatalf("a's stats: %+v", st)
	}
}

// TestFailedNewLeavesNoListenBehindPgBouncer: New refuses PgBouncer in
// transaction mode with ErrNotHeard. A LISTEN it ran would stay on a server
// connection that another client took before New's UNLISTEN, and every
// later notification on the channel (every Save of the healthy instances)
// would land in unrelated clients: so New listens on the store's channel
// only after the connection proved it hears the pool.
func TestFailedNewLeavesNoListenBehindPgBouncer(t *testing.T) {
	t.Parallel()
	url := startPgBouncer(t, "transaction")
	var leaked atomic.Int64
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	pc.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	cfg := testConfig(t)
	channel := channelOf(cfg.Table)
	pc.ConnConfig.OnNotification = func(_ *pgconn.PgConn, n *pgconn.Notification) {
		if n.Channel == channel {
			leaked.Add(1)
		}
	}
	unrelated := newPoolConfig(t, pc)
	// An unrelated application keeps PgBouncer's server connections busy.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				_, _ = unrelated.Exec(ctx, "SELECT pg_sleep(0.001)")
			}
		}()
	}
	for range 3 { // a process that crash-loops on the error
		s, err := pgsession.New(context.Background(), bouncerPool(t, url), cfg)
		if err == nil {
			s.Close()
			t.Fatal("New succeeded")
		}
		if !errors.Is(err, pgsession.ErrNotHeard) {
			t.Fatal(err)
		}
	}
	// The healthy instances' writes notify the channel.
	for range 300 {
		sqlExec(t, "SELECT pg_notify($1, 'x')", channelOf(cfg.Table))
		time.Sleep(time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	cancel()
	wg.Wait()
	if n := leaked.Load(); n > 0 {
		t.Fatalf("after New failed, an unrelated application received %d of the store's notifications", n)
	}
}

func channelOf(table string) string {
	name := strings.ToLower("pgsession:public." + table)
	if len(name) > 63 {
		sum := sha256.Sum256([]byte(name))
		name = name[:63-17] + "~" + hex.EncodeToString(sum[:8])
	}
	return name
}
