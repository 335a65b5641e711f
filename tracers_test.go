package pgsession_test

import (
	"context"
	"crypto/rand"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// statementCounter counts the statements a pool runs that contain a string.
type statementCounter struct {
	match string
	n     atomic.Int64
	hold  chan struct{} // if not nil, matching statements wait for it to close
	held  chan struct{} // closed when the first matching statement waits
	once  sync.Once
}

func tracedPool(t testing.TB, tracer pgx.QueryTracer) *pgxpool.Pool {
	t.Helper()
	pcfg, err := pgxpool.ParseConfig(testDB.url)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.ConnConfig.Tracer = tracer
	return newPoolConfig(t, pcfg)
}

func (c *statementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if strings.Contains(d.SQL, c.match) {
		c.n.Add(1)
		if c.hold != nil {
			c.once.Do(func() { close(c.held) })
			<-c.hold
		}
	}
	return ctx
}

func (c *statementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
