// Command testcontainer starts PostgreSQL in a Docker container for the
// pgsession tests, which run it when neither PGSESSION_TEST_DATABASE_URL
// nor a local server gives them a database.
//
// It is a module of its own so that testcontainers-go and its many
// dependencies stay out of the build of every pgsession user.
//
//	go -C internal/testcontainer run .
//
// It checks that a Docker engine answers, starts postgres:16-alpine and
// prints one line on standard output:
//
//	PGSESSION_TEST_DATABASE_URL=postgres://...
//
// Then it keeps the container until its standard input is closed or it
// receives SIGINT or SIGTERM, and terminates it; either also abandons a
// start still in progress. On failure it prints a one-line reason on
// standard error and exits with status 3 when no Docker engine answers, 1
// otherwise (go run itself exits with 1 and adds "exit status 3"). The -v
// flag keeps testcontainers' own log on standard error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tclog "github.com/testcontainers/testcontainers-go/log"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
)

const (
	envDatabaseURL = "PGSESSION_TEST_DATABASE_URL"
	image          = "postgres:16-alpine"

	exitFailure  = 1 // the container did not start or could not be stopped
	exitNoDocker = 3 // no healthy Docker engine
)

// errNoDocker marks the failures that mean no Docker engine answers.
var errNoDocker = errors.New("no healthy Docker engine")

func main() {
	verbose := flag.Bool("v", false, "keep testcontainers' log on standard error")
	flag.Parse()
	if !*verbose {
		tclog.SetDefault(tclog.NewNoopLogger())
	}
	if err := run(); err != nil {
		// One line, whatever the error says.
		fmt.Fprintln(os.Stderr, "testcontainer: "+strings.Join(strings.Fields(err.Error()), " "))
		if errors.Is(err, errNoDocker) {
			os.Exit(exitNoDocker)
		}
		os.Exit(exitFailure)
	}
}

func run() error {
	// Whoever started us stops us by closing our input, or by a signal:
	// that cancels ctx, whether the container is still starting or ready.
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel(errors.New("standard input closed"))
	}()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(signals)
	go func() {
		if sig, ok := <-signals; ok {
			cancel(fmt.Errorf("got %v", sig))
		}
	}()
	stopped := func(err error) error {
		if errors.Is(err, errNoDocker) && !errors.Is(err, context.Canceled) {
			return err // not for having been stopped
		}
		if cause := context.Cause(ctx); cause != nil {
			return fmt.Errorf("stopped before PostgreSQL was ready: %v (%w)", cause, err)
		}
		return err
	}

	if err := checkDocker(ctx); err != nil {
		return stopped(err)
	}
	ctr, err := startPostgres(ctx)
	if err != nil {
		return stopped(err)
	}
	url, err := ctr.ConnectionString(ctx, "sslmode=disable")
	if err != nil {
		return stopped(errors.Join(fmt.Errorf("connection string: %w", err), terminate(ctr)))
	}
	if _, err := fmt.Printf("%s=%s\n", envDatabaseURL, url); err != nil {
		return errors.Join(fmt.Errorf("print the URL: %w", err), terminate(ctr))
	}
	<-ctx.Done()
	return terminate(ctr)
}

// checkDocker returns an error wrapping errNoDocker unless a Docker engine
// answers within 10 seconds.
func checkDocker(ctx context.Context) (err error) {
	defer func() {
		// testcontainers can panic when no Docker host can be found at all.
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v", errNoDocker, p)
		}
	}()
	provider, err := testcontainers.NewDockerProvider()
	if err != nil {
		return fmt.Errorf("%w: %w", errNoDocker, err)
	}
	defer provider.Close()
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := provider.Health(hctx); err != nil {
		return fmt.Errorf("%w: %w", errNoDocker, err)
	}
	return nil
}

// startPostgres starts the container and waits until PostgreSQL accepts
// connections.
func startPostgres(ctx context.Context) (ctr *tcpostgres.PostgresContainer, err error) {
	defer func() {
		if p := recover(); p != nil {
			_ = testcontainers.TerminateContainer(ctr)
			ctr, err = nil, fmt.Errorf("start %s: panic: %v", image, p)
		}
	}()
	ctr, err = tcpostgres.Run(ctx, image,
		tcpostgres.WithDatabase("test"),
		tcpostgres.WithUsername("postgres"),
		tcpostgres.WithPassword("postgres"),
		tcpostgres.BasicWaitStrategies(),
	)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("start %s: %w", image, err), terminate(ctr))
	}
	return ctr, nil
}

// terminate stops and removes the container, if any.
func terminate(ctr *tcpostgres.PostgresContainer) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := testcontainers.TerminateContainer(ctr, testcontainers.StopContext(ctx)); err != nil {
		return fmt.Errorf("terminate the container: %w", err)
	}
	return nil
}
