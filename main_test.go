package pgsession_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/pgsession/pgsession/internal/cluster"
)

// envDatabaseURL names the database the tests use, when set.
const envDatabaseURL = "PGSESSION_TEST_DATABASE_URL"

// localDatabaseURL is where the tests look for PostgreSQL when
// envDatabaseURL is not set.
const localDatabaseURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// containerDir is the module, relative to this package, whose program
// starts PostgreSQL in Docker when no other database answers. It is a
// module of its own so that testcontainers-go stays out of pgsession's.
const containerDir = "internal/testcontainer"

// containerStartTimeout bounds how long the tests wait for the container's
// URL: the first run compiles the program and pulls the image.
const containerStartTimeout = 5 * time.Minute

// containerStopTimeout bounds how long cleanup waits for the program to
// terminate the container before it kills the program.
const containerStopTimeout = time.Minute

// testDB is the database every test in this package uses, found by TestMain.
var testDB struct {
	url    string
	source string
	pool   *pgxpool.Pool // shared by tests that need nothing special
}

// noDatabase, when not empty, says why TestMain found no PostgreSQL and
// how to provide one. requireDB fails every test that needs the database
// with it; the tests that need none still run.
var noDatabase string

// requireDB fails t at once when the tests found no PostgreSQL. Every test
// that uses the database calls it first, directly or through testConfig,
// newPool or newPoolConfig.
func requireDB(t testing.TB) {
	t.Helper()
	if noDatabase != "" {
		t.Fatalf("%s", noDatabase)
	}
}

func TestMain(m *testing.M) {
	if cluster.IsInstance() {
		// Re-executed by a multi-process test as one application instance.
		os.Exit(cluster.RunInstance())
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	ctx := context.Background()
	// The goroutines that run before the tests, and only those, may still
	// run after them. (IgnoreCurrent taken at the end would ignore every
	// leak.)
	leakBaseline := goleak.IgnoreCurrent()
	cleanup := func() {}
	url, source, cleanupDB, err := findDatabase(ctx)
	if err == nil {
		cleanup = cleanupDB
		var pool *pgxpool.Pool
		pool, err = pgxpool.New(ctx, url)
		if err == nil {
			if err = pool.Ping(ctx); err != nil {
				pool.Close()
			}
		}
		if err == nil {
			testDB.url, testDB.source, testDB.pool = url, source, pool
		} else {
			err = fmt.Errorf("tried:\n  - %s: answered, but connecting failed: %w", source, err)
		}
	}
	if err != nil {
		noDatabase = howToProvideDatabase(err)
		testDB.url, testDB.pool = noDatabaseURL, noDatabasePool()
		fmt.Fprintf(os.Stderr, "pgsession tests: every test that needs PostgreSQL fails: %s\n", noDatabase)
	} else {
		fmt.Fprintf(os.Stderr, "pgsession tests: PostgreSQL from %s\n", source)
	}

	code := m.Run()
	if testDB.pool != nil {
		testDB.pool.Close()
	}
	cleanup()
	if code == 0 {
		if err := goleak.Find(leakBaseline); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: goroutines leaked after all tests: %v\n", err)
			return 1
		}
	}
	return code
}

// noDatabaseURL stands in for testDB.url when the tests found no
// PostgreSQL: it names a socket that does not exist, so that a test that
// uses testDB.url without calling requireDB first fails to connect, rather
// than connect wherever libpq's defaults lead.
const noDatabaseURL = "postgres://no-database@/no-database?host=/pgsession-tests-found-no-postgresql&sslmode=disable"

// errNoDatabase is the error of every connection of noDatabasePool.
var errNoDatabase = errors.New("the pgsession tests found no PostgreSQL (the test uses testDB without calling requireDB first)")

// noDatabasePool stands in for testDB.pool when the tests found no
// PostgreSQL: a test that uses it without calling requireDB first fails
// with errNoDatabase instead of crashing the test binary on a nil pool.
func noDatabasePool() *pgxpool.Pool {
	cfg, err := pgxpool.ParseConfig(noDatabaseURL)
	if err != nil {
		panic(err)
	}
	cfg.ConnConfig.DialFunc = func(context.Context, string, string) (net.Conn, error) {
		return nil, errNoDatabase
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg) // connects on first use
	if err != nil {
		panic(err)
	}
	return pool
}

// howToProvideDatabase is the message of requireDB: what findDatabase
// tried, and how to give the tests PostgreSQL.
func howToProvideDatabase(tried error) string {
	return fmt.Sprintf(`the pgsession tests need PostgreSQL and found none.
%v
Provide one of:
  - %s=postgres://user@host:port/db (a database the tests may create tables in)
  - a running Docker engine (the tests run %s, which starts postgres:16-alpine with testcontainers-go)
  - a local server at %s`, tried, envDatabaseURL, containerDir, localDatabaseURL)
}

// findDatabase returns a connection string for a test database: the one
// named by the environment, else the local server, else a PostgreSQL
// container when a Docker engine may exist. cleanup releases what it
// started.
func findDatabase(ctx context.Context) (url, source string, cleanup func(), err error) {
	noop := func() {}
	if url := os.Getenv(envDatabaseURL); url != "" {
		// Named explicitly: a failure is final, not a reason to look elsewhere.
		if err := ping(ctx, url); err != nil {
			return "", "", nil, fmt.Errorf("tried:\n  - %s (set): does not answer: %w", envDatabaseURL, err)
		}
		return url, envDatabaseURL, noop, nil
	}
	tried := []string{envDatabaseURL + ": not set"}
	if err := ping(ctx, localDatabaseURL); err == nil {
		return localDatabaseURL, "the local server " + localDatabaseURL, noop, nil
	} else {
		tried = append(tried, "the local server "+localDatabaseURL+": "+err.Error())
	}
	if where, ok := dockerEngine(); !ok {
		tried = append(tried, "a container: no Docker engine ("+where+")")
	} else {
		url, cleanup, err := startContainer(ctx)
		if err == nil {
			if err = ping(ctx, url); err == nil {
				return url, "a postgres:16-alpine container (" + containerDir + ", Docker at " + where + ")", cleanup, nil
			}
			cleanup()
		}
		tried = append(tried, "a container (Docker at "+where+"): "+err.Error())
	}
	return "", "", nil, errors.New("tried:\n  - " + strings.Join(tried, "\n  - "))
}

func ping(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()
	return pool.Ping(ctx)
}

// dockerEngine reports whether a Docker engine plausibly exists, and where;
// when not, it says where it looked.
func dockerEngine() (where string, ok bool) {
	if host := os.Getenv("DOCKER_HOST"); host != "" {
		return "DOCKER_HOST=" + host, true
	}
	sockets := []string{"/var/run/docker.sock"}
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
		sockets = append(sockets, filepath.Join(dir, "docker.sock"))
	}
	if home, err := os.UserHomeDir(); err == nil {
		sockets = append(sockets, filepath.Join(home, ".docker", "run", "docker.sock"))
	}
	for _, s := range sockets {
		if _, err := os.Stat(s); err == nil {
			return s, true
		}
	}
	return "DOCKER_HOST is not set and none of " + strings.Join(sockets, ", ") + " exists", false
}

// goCommand returns the go command that runs these tests, else the one on
// PATH.
func goCommand() (string, error) {
	exe := "go"
	if runtime.GOOS == "windows" {
		exe += ".exe"
	}
	if root := runtime.GOROOT(); root != "" {
		if p := filepath.Join(root, "bin", exe); fileExists(p) {
			return p, nil
		}
	}
	return exec.LookPath("go")
}

func fileExists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir()
}

// startContainer runs the program in containerDir, which starts
// PostgreSQL in Docker, prints its URL and keeps the container until its
// standard input closes. cleanup closes that input and waits for the
// program to terminate the container.
func startContainer(ctx context.Context) (url string, cleanup func(), err error) {
	wd, err := os.Getwd() // go test runs in the package's directory, the repository's root
	if err != nil {
		return "", nil, err
	}
	dir := filepath.Join(wd, filepath.FromSlash(containerDir))
	if !fileExists(filepath.Join(dir, "go.mod")) {
		return "", nil, fmt.Errorf("%s has no go.mod", dir)
	}
	goCmd, err := goCommand()
	if err != nil {
		return "", nil, fmt.Errorf("find the go command: %w", err)
	}

	cmd := exec.Command(goCmd, "-C", dir, "run", ".")
	stderr := &tailBuffer{max: 16 << 10}
	cmd.Stderr = stderr
	// Bounds Wait when a process that go run left behind still holds
	// standard error.
	cmd.WaitDelay = 10 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("run %s: %w", strings.Join(cmd.Args, " "), err)
	}

	// The reader sends the URL, then drains standard output until the
	// program exits: Wait must not run before it is done.
	urls := make(chan string, 1)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		prefix := envDatabaseURL + "="
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), prefix); ok && u != "" {
				select {
				case urls <- u:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()

	// stop closes the program's input, which makes it terminate the
	// container (or abandon starting it) and exit, and waits for that.
	stop := func() error {
		_ = stdin.Close()
		grace := time.NewTimer(containerStopTimeout)
		defer grace.Stop()
		select {
		case <-drained:
		case <-grace.C:
			_ = cmd.Process.Kill()
			select {
			case <-drained:
			case <-time.After(10 * time.Second):
				// The program that go run started still holds the pipe.
				_ = stdout.Close()
				<-drained
			}
		}
		return cmd.Wait()
	}

	timer := time.NewTimer(containerStartTimeout)
	defer timer.Stop()
	select {
	case u := <-urls:
		return u, func() {
			if err := stop(); err != nil {
				fmt.Fprintf(os.Stderr, "pgsession tests: stop the PostgreSQL container: %v: %s\n", err, stderr.reason())
			}
		}, nil
	case <-drained:
		// The program exited without a URL.
		err := stop()
		select {
		case u := <-urls: // printed its URL just before exiting anyway
			return "", nil, fmt.Errorf("%s printed %s and exited: %v", containerDir, u, err)
		default:
		}
		return "", nil, fmt.Errorf("%s: %s (%v)", containerDir, stderr.reason(), err)
	case <-timer.C:
		err := stop()
		return "", nil, fmt.Errorf("%s printed no URL within %v (%v): %s", containerDir, containerStartTimeout, err, stderr.reason())
	case <-ctx.Done():
		_ = stop()
		return "", nil, ctx.Err()
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

// reason returns the line in which the program says why it failed, else
// all it wrote, on one line.
func (b *tailBuffer) reason() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	lines := strings.Split(strings.TrimSpace(string(b.buf)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if r, ok := strings.CutPrefix(lines[i], "testcontainer: "); ok {
			return strings.TrimSpace(r)
		}
	}
	if s := strings.Join(strings.Fields(string(bytes.TrimSpace(b.buf))), " "); s != "" {
		return s
	}
	return "no output"
}
