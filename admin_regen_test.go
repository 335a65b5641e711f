package pgsession_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgsession/pgsession"
)

var commitCut atomic.Pointer[context.CancelFunc]

// commitConn: once it sent a COMMIT while commitCut is set, its next read
// waits for the server to commit, cancels the request and fails.
type commitConn struct {
	net.Conn
	armed atomic.Bool
}

func (c *commitConn) Write(b []byte) (int, error) {
	if commitCut.Load() != nil && len(b) > 0 && b[0] == 'Q' && bytes.Contains(bytes.ToLower(b), []byte("commit\x00")) {
		c.armed.Store(true)
	}
	return c.Conn.Write(b)
}

func (c *commitConn) Read(b []byte) (int, error) {
	if c.armed.Load() {
		time.Sleep(300 * time.Millisecond)
		if f := commitCut.Load(); f != nil {
			(*f)()
		}
		c.Conn.Close()
		return 0, context.Canceled
	}
	return c.Conn.Read(b)
}

func TestRegenerateCutShortAfterCommitIsUncertain(t *testing.T) {
	cfg := testConfig(t)
	pcfg, err := pgxpool.ParseConfig(testDB.url)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &commitConn{Conn: c}, nil
	}
	s := newStore(t, newPoolConfig(t, pcfg), cfg)
	sess, c := login(t, s, map[any]any{"n": 0})
	ctx, cancel := context.WithCancel(context.Background())
	commitCut.Store(&cancel)
	err = s.Regenerate(request(c).WithContext(ctx), httptest.NewRecorder(), sess)
	commitCut.Store(nil)
	var live int
	if qerr := testDB.pool.QueryRow(context.Background(), `SELECT count(*) FROM `+cfg.Table+` WHERE NOT deleted`).Scan(&live); qerr != nil {
		t.Fatal(qerr)
	}
	var dead int
	_ = testDB.pool.QueryRow(context.Background(), `SELECT count(*) FROM `+cfg.Table+` WHERE deleted`).Scan(&dead)
	t.Logf("Regenerate: %v; live rows now %d, tombstones %d (1 live before: the old token's)", err, live, dead)
	if err != nil && !errors.Is(err, pgsession.ErrUncertain) {
		if got := get(t, newStore(t, testDB.pool, cfg), c); got.IsNew {
			t.Fatalf("Regenerate failed with %v (not ErrUncertain), yet it committed: the client's cookie is logged out", err)
		}
	}
}
