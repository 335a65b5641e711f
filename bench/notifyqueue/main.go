// Command notifyqueue measures what a full NOTIFY queue does to writes and
// how long writes take to recover once the transaction that held the queue
// ends. It fills the whole queue (8 GB on PostgreSQL 15), so run it only
// against a throwaway server of its own, never a shared one:
//
//	BIN=$(pg_config --bindir); D=$(mktemp -d); chown postgres $D
//	su postgres -c "$BIN/initdb -D $D/data -U postgres -A trust --no-sync"
//	su postgres -c "$BIN/pg_ctl -D $D/data -l $D/log -w start -o '-p 5499 -k $D -c listen_addresses=127.0.0.1 -c fsync=off'"
//	go run ./notifyqueue -dsn postgres://postgres@127.0.0.1:5499/postgres
//	su postgres -c "$BIN/pg_ctl -D $D/data -m immediate stop"; rm -rf $D
//
// Method: a session LISTENs and then sits in an open transaction (as a
// stuck listener of any application would); another fills the queue with
// 8000-byte notifications in transactions of 10,000 until a commit fails
// with SQLSTATE 54000. Then the stuck transaction ends (the session stays,
// as an application's connection would) and a writer retries a one-row
// notifying statement every 100 ms until it succeeds, sampling
// pg_notification_queue_usage() meanwhile.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func main() {
	dsn := flag.String("dsn", "", "a throwaway server's connection string (required: the run fills its NOTIFY queue)")
	flag.Parse()
	if *dsn == "" {
		fmt.Fprintln(os.Stderr, "notifyqueue: -dsn is required; read the package comment first")
		os.Exit(2)
	}
	if err := run(context.Background(), *dsn); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, dsn string) error {
	stuck, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer stuck.Close(ctx)
	writer, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer writer.Close(ctx)
	if _, err := stuck.Exec(ctx, "LISTEN stuck"); err != nil {
		return err
	}
	tx, err := stuck.Begin(ctx)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		return err
	}

	usage := func() float64 {
		var u float64
		_ = writer.QueryRow(ctx, "SELECT pg_notification_queue_usage()").Scan(&u)
		return u
	}
	start := time.Now()
	var full error
	for batches := 0; ; batches++ {
		_, err := writer.Exec(ctx, "SELECT pg_notify('filler', repeat('x', 7990) || g) FROM generate_series(1, 10000) g")
		if err != nil {
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "54000" {
				return fmt.Errorf("fill: %w", err)
			}
			full = err
			break
		}
		if batches%50 == 0 {
			log.Printf("filling: %d batches, usage %.3f, %v", batches, usage(), time.Since(start).Round(time.Second))
		}
	}
	log.Printf("queue full after %v: %v (usage %.4f)", time.Since(start).Round(time.Second), full, usage())

	// A write now fails as every Save and logout would.
	_, err = writer.Exec(ctx, "SELECT pg_notify('app', 'one')")
	log.Printf("a notifying write while full: %v", err)

	ended := time.Now()
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	log.Printf("the stuck transaction ended; its session stays connected")
	for attempt := 1; ; attempt++ {
		_, err := writer.Exec(ctx, "SELECT pg_notify('app', 'one')")
		if err == nil {
			fmt.Printf("writes recovered %v after the stuck transaction ended (%d attempts; usage now %.4f)\n",
				time.Since(ended).Round(100*time.Millisecond), attempt, usage())
			return nil
		}
		if attempt%50 == 0 {
			log.Printf("still failing after %v, usage %.4f: %v", time.Since(ended).Round(time.Second), usage(), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
