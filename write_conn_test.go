package pgsession_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgsession/pgsession"
)

var cutKey atomic.Pointer[[]byte]

// cutConn loses the connection right after it sent a message carrying
// cutKey: the server runs (and commits) the statement, the client never
// hears back.
type cutConn struct {
	net.Conn
	armed atomic.Bool
}

func (c *cutConn) Write(b []byte) (int, error) {
	if k := cutKey.Load(); k != nil && bytes.Contains(b, *k) {
		c.armed.Store(true)
	}
	return c.Conn.Write(b)
}

func (c *cutConn) Read(b []byte) (int, error) {
	if c.armed.Load() {
		time.Sleep(300 * time.Millisecond) // the server commits meanwhile
		c.Conn.Close()
		return 0, errors.New("connection reset (simulated)")
	}
	return c.Conn.Read(b)
}

func TestLostConnectionAfterSendIsUncertain(t *testing.T) {
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
		return &cutConn{Conn: c}, nil
	}
	s := newStore(t, newPoolConfig(t, pcfg), cfg)
	sess, _ := login(t, s, map[any]any{"n": 0})
	tok, _ := base64.RawURLEncoding.DecodeString(sess.ID)
	k := sha256.Sum256(tok)
	kb := k[:]
	cutKey.Store(&kb)
	sess.Values["n"] = 42
	_, err = saveWithin(s, sess, 10*time.Second)
	cutKey.Store(nil)
	var n int
	if qerr := testDB.pool.QueryRow(context.Background(), `SELECT version FROM `+cfg.Table+` WHERE key_hash = $1`, kb).Scan(&n); qerr != nil {
		t.Fatal(qerr)
	}
	t.Logf("Save: %v; stored version now %d", err, n)
	if err != nil && n > 1 && !errors.Is(err, pgsession.ErrUncertain) {
		t.Fatalf("Save failed with %v, not ErrUncertain, but its write committed (version %d)", err, n)
	}
}
