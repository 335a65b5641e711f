// Command cluster demonstrates pgsession's cache coherence: it starts three
// application instances as separate processes on one database, drives
// sessions across them for a few seconds (log in on one, read on the
// others, change, log out elsewhere, many clients at once) and prints what
// each instance did. It exits non-zero on any stale read, lost session or
// leftover process.
//
//	go run ./examples/cluster
//
// The database is DATABASE_URL, else the libpq PG* variables, else
// postgres://postgres@127.0.0.1:5432/postgres. The demo makes a table of
// its own and drops it at the end.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgsession/pgsession/internal/cluster"
)

const localURL = "postgres://postgres@127.0.0.1:5432/postgres"

func main() {
	if cluster.IsInstance() {
		os.Exit(cluster.RunInstance())
	}
	os.Exit(run())
}

func run() int {
	instances := flag.Int("instances", 3, "application instances (processes)")
	clients := flag.Int("clients", 24, "concurrent simulated users")
	duration := flag.Duration("duration", 5*time.Second, "how long to drive them")
	window := flag.Duration("window", 500*time.Millisecond, "delivery window: how long an old cookie may see older data")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	dbURL, source := databaseURL()
	pool, err := pgxpool.New(ctx, dbURL)
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "cluster: cannot reach PostgreSQL (%s): %v\nSet DATABASE_URL to a database the demo may create a table in.\n", source, err)
		return 2
	}
	defer pool.Close()

	var b [6]byte
	_, _ = rand.Read(b[:])
	table := "pgsession_demo_" + hex.EncodeToString(b[:])
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	defer func() {
		if _, err := pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+pgx.Identifier{table}.Sanitize()); err != nil {
			fmt.Fprintf(os.Stderr, "cluster: drop table %s: %v\n", table, err)
		}
	}()

	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "cluster: %v\n", err)
		return 2
	}
	fmt.Printf("database: %s; table %s\n", source, table)
	ps, err := cluster.Start(cluster.Config{
		Exe: exe, DatabaseURL: dbURL, Table: table, Key: []byte(hex.EncodeToString(key)), Stderr: os.Stderr,
	}, *instances)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cluster: %v\n", err)
		return 1
	}
	var addrs []string
	for _, p := range ps {
		addrs = append(addrs, p.Addr)
	}
	fmt.Printf("started %d instances (separate processes): %s\n", len(ps), strings.Join(addrs, ", "))
	fmt.Printf("driving %d clients for %v (delivery window %v)...\n\n", *clients, *duration, *window)

	rep, driveErr := cluster.Drive(ctx, addrs, cluster.Workload{Clients: *clients, Duration: *duration, Window: *window})
	stopErr := cluster.Stop(ps)
	rep.Print(os.Stdout)

	code := 0
	if driveErr != nil {
		fmt.Fprintf(os.Stderr, "cluster: %v\n", driveErr)
		code = 1
	}
	if stopErr != nil {
		fmt.Fprintf(os.Stderr, "cluster: leftover or failed instance: %v\n", stopErr)
		code = 1
	}
	if !rep.OK() {
		fmt.Fprintln(os.Stderr, "cluster: INCONSISTENT: see the table above")
		code = 1
	}
	if code == 0 {
		fmt.Println("consistent: no stale read, no lost session; all instances exited")
	}
	return code
}

// databaseURL picks the database: DATABASE_URL, else the libpq PG*
// variables (an empty connection string makes pgx read them), else the
// local server.
func databaseURL() (url, source string) {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		return u, "DATABASE_URL"
	}
	for _, v := range []string{"PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE"} {
		if os.Getenv(v) != "" {
			return "", "the PG* environment variables"
		}
	}
	return localURL, localURL
}
