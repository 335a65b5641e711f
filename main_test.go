package pgsession_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
	"go.uber.org/goleak"

	"github.com/pgsession/pgsession/internal/cluster"
)

// envDatabaseURL names the database the tests use, when set.
const envDatabaseURL = "PGSESSION_TEST_DATABASE_URL"

// localDatabaseURL is the last place the tests look for PostgreSQL.
const localDatabaseURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// testDB is the database every test in this package uses, found by TestMain.
var testDB struct {
	url    string
	source string
	pool   *pgxpool.Pool // shared by tests that need nothing special
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
	url, source, cleanup, err := findDatabase(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, `FAIL: the pgsession tests need PostgreSQL and found none.
%v
Provide one of:
  - %s=postgres://user@host:port/db (a database the tests may create tables in)
  - a running Docker engine (testcontainers-go starts postgres:16-alpine)
  - a local server at %s
`, err, envDatabaseURL, localDatabaseURL)
		return 1
	}
	testDB.url, testDB.source = url, source
	pool, err := pgxpool.New(ctx, url)
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: connect to the test database (%s): %v\n", source, err)
		cleanup()
		return 1
	}
	testDB.pool = pool
	fmt.Fprintf(os.Stderr, "pgsession tests: PostgreSQL from %s\n", source)

	code := m.Run()
	pool.Close()
	cleanup()
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreCurrent()); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: goroutines leaked after all tests: %v\n", err)
			return 1
		}
	}
	return code
}

// findDatabase returns a connection string for a test database: the one
// named by the environment, else a testcontainers PostgreSQL when Docker is
// healthy, else the local server. cleanup releases what it started.
func findDatabase(ctx context.Context) (url, source string, cleanup func(), err error) {
	noop := func() {}
	if url := os.Getenv(envDatabaseURL); url != "" {
		// Named explicitly: a failure is final, not a reason to look elsewhere.
		if err := ping(ctx, url); err != nil {
			return "", "", nil, fmt.Errorf("%s is set but does not answer: %w", envDatabaseURL, err)
		}
		return url, envDatabaseURL, noop, nil
	}
	var tried []string
	url, cleanup, err = startContainer(ctx)
	if err == nil {
		return url, "testcontainers (postgres:16-alpine)", cleanup, nil
	}
	tried = append(tried, "testcontainers: "+err.Error())
	if err := ping(ctx, localDatabaseURL); err == nil {
		return localDatabaseURL, "the local server " + localDatabaseURL, noop, nil
	} else {
		tried = append(tried, "local server: "+err.Error())
	}
	tried = append([]string{envDatabaseURL + ": not set"}, tried...)
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

// startContainer starts PostgreSQL with testcontainers-go when a Docker
// engine answers.
func startContainer(ctx context.Context) (url string, cleanup func(), err error) {
	defer func() {
		// testcontainers can panic when no Docker host can be found at all.
		if p := recover(); p != nil {
			err = fmt.Errorf("no Docker engine: %v", p)
		}
	}()
	provider, err := testcontainers.NewDockerProvider()
	if err != nil {
		return "", nil, fmt.Errorf("no Docker engine: %w", err)
	}
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = provider.Health(hctx)
	cancel()
	provider.Close()
	if err != nil {
		return "", nil, fmt.Errorf("Docker engine not healthy: %w", err)
	}
	ctr, err := tcpostgres.Run(ctx, "postgres:16-alpine",
		tcpostgres.WithDatabase("test"),
		tcpostgres.WithUsername("postgres"),
		tcpostgres.WithPassword("postgres"),
		tcpostgres.BasicWaitStrategies(),
	)
	if err != nil {
		if ctr != nil {
			_ = testcontainers.TerminateContainer(ctr)
		}
		return "", nil, fmt.Errorf("start container: %w", err)
	}
	url, err = ctr.ConnectionString(ctx, "sslmode=disable")
	if err != nil {
		_ = testcontainers.TerminateContainer(ctr)
		return "", nil, err
	}
	return url, func() { _ = testcontainers.TerminateContainer(ctr) }, nil
}
