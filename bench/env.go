package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/url"
	"os"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Where the suite finds its servers.
const (
	envDatabaseURL   = "PGSESSION_TEST_DATABASE_URL"
	localDatabaseURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	envRedisAddr     = "PGSESSION_TEST_REDIS_ADDR"
	localRedisAddr   = "127.0.0.1:6379"
)

// sharedPoolConns is the size of the pool every store of the comparison
// shares: room for the 8 goroutines of the parallel Get and then some.
const sharedPoolConns = 16

func databaseURL() string {
	if u := os.Getenv(envDatabaseURL); u != "" {
		return u
	}
	return localDatabaseURL
}

func redisAddr() string {
	if a := os.Getenv(envRedisAddr); a != "" {
		return a
	}
	return localRedisAddr
}

// redacted returns a connection string without its password.
func redacted(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable connection string)"
	}
	return u.Redacted()
}

// env is the database (and, when asked for, Redis) a run measures on.
type env struct {
	dbURL     string
	redisAddr string // "" when Redis was not asked for
	pool      *pgxpool.Pool
}

// connect opens the shared pool and checks that PostgreSQL answers, and,
// with needRedis, that Redis answers too. Its errors say how to provide
// what is missing.
func connect(ctx context.Context, needRedis bool) (*env, error) {
	e := &env{dbURL: databaseURL()}
	pool, err := e.newPool(ctx, sharedPoolConns, nil)
	if err != nil {
		return nil, fmt.Errorf("the pgsession benchmarks need PostgreSQL, and none answers at %s: %v\n"+
			"Set %s=postgres://user@host:port/db (a database the suite may create and drop tables in), or start a server at %s",
			redacted(e.dbURL), err, envDatabaseURL, localDatabaseURL)
	}
	e.pool = pool
	if needRedis {
		addr := redisAddr()
		if err := pingRedis(ctx, addr); err != nil {
			pool.Close()
			return nil, fmt.Errorf("the pgsession benchmarks need Redis for the redistore row, and none answers at %s: %v\n"+
				"Set %s=host:port, or start redis-server at %s",
				addr, err, envRedisAddr, localRedisAddr)
		}
		e.redisAddr = addr
	}
	return e, nil
}

func (e *env) close() {
	if e.pool != nil {
		e.pool.Close()
	}
}

// newPool opens a pool of at most maxConns connections on the database,
// with params as run-time parameters of every connection, and checks it.
func (e *env) newPool(ctx context.Context, maxConns int, params map[string]string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(e.dbURL)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = int32(maxConns)
	for k, v := range params {
		cfg.ConnConfig.RuntimeParams[k] = v
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// warm opens n connections of pool at once, so that no measurement pays
// for connecting.
func warm(ctx context.Context, pool *pgxpool.Pool, n int) error {
	conns := make([]*pgxpool.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	for range n {
		c, err := pool.Acquire(ctx)
		if err != nil {
			return err
		}
		conns = append(conns, c)
	}
	return nil
}

func pingRedis(ctx context.Context, addr string) error {
	c, err := redis.DialContext(ctx, "tcp", addr,
		redis.DialConnectTimeout(3*time.Second), redis.DialReadTimeout(3*time.Second))
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Do("PING")
	return err
}

var nameSeq atomic.Int64

// uniqueName returns a table, schema or key prefix name that no other
// scenario of any run uses.
func uniqueName(tag string) string {
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	return fmt.Sprintf("pgsbench_%x_%d_%s", rnd, nameSeq.Add(1), tag)
}

// dropTable drops a table the suite made; its error is worth reporting only.
func (e *env) dropTable(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := e.pool.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{name}.Sanitize())
	return err
}

// freeConnections returns how many more client connections the server
// accepts now.
func (e *env) freeConnections(ctx context.Context) (free, max int, err error) {
	err = e.pool.QueryRow(ctx, `SELECT current_setting('max_connections')::int,
		(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int`).Scan(&max, &free)
	return max - free, max, err
}
