package pgsession_test

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgsession/pgsession"
)

// holdProxy forwards to the test database, or, while hold is set, accepts
// connections and holds them silent (a blackholed server), signalling each.
type holdProxy struct {
	target   string
	hold     atomic.Bool
	accepted chan struct{}
	mu       sync.Mutex
	conns    []net.Conn
	silent   []*atomic.Bool
}

// silenceAll makes every existing connection silently dead (half-open):
// nothing is forwarded either way, nothing is closed.
func (p *holdProxy) silenceAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.silent {
		s.Store(true)
	}
}

func silentCopy(dst, src net.Conn, silent *atomic.Bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !silent.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
}

func newHoldProxy(t *testing.T) (string, *holdProxy) {
	cfg, err := pgx.ParseConfig(testDB.url)
	if err != nil {
		t.Fatal(err)
	}
	p := &holdProxy{target: net.JoinHostPort(cfg.Host, itoa(int(cfg.Port))), accepted: make(chan struct{}, 100)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); p.dropAll() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns = append(p.conns, c)
			p.mu.Unlock()
			if p.hold.Load() {
				select {
				case p.accepted <- struct{}{}:
				default:
				}
				continue // held: never answered
			}
			s, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			sil := new(atomic.Bool)
			p.mu.Lock()
			p.conns = append(p.conns, s)
			p.silent = append(p.silent, sil)
			p.mu.Unlock()
			go silentCopy(s, c, sil)
			go silentCopy(c, s, sil)
		}
	}()
	u := "postgres://" + cfg.User + "@" + ln.Addr().String() + "/" + cfg.Database + "?sslmode=disable"
	return u, p
}

func (p *holdProxy) dropAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestNewJoiningDuringAnAttemptDoesNotWaitOutTheBackoff: a Store created
// while the hub's connection attempt, begun before it joined, hangs on a
// silent server: when that attempt fails, the next follows at once, and
// New succeeds as soon as the database answers.
func TestNewJoiningDuringAnAttemptDoesNotWaitOutTheBackoff(t *testing.T) {
	t.Parallel()
	url, p := newHoldProxy(t)
	pool := newPool(t, testDB.url)
	cfgA, cfgB := listeningThrough(t, url, 400*time.Millisecond, 400*time.Millisecond)
	logs := &logCounter{}
	cfgA.Logger = slog.New(logs)
	newStore(t, pool, cfgA)
	p.hold.Store(true)
	p.dropAll()
	for dl := time.Now().Add(40 * time.Second); logs.count(slog.LevelDebug, "reconnect failed") < 6; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(dl) {
			t.Fatalf("only %d failures", logs.count(slog.LevelDebug, "reconnect failed"))
		}
	}
	// Drain, then wait for the next attempt to reach the (held) server.
	for len(p.accepted) > 0 {
		<-p.accepted
	}
	select {
	case <-p.accepted:
	case <-time.After(40 * time.Second):
		t.Fatal("no attempt")
	}
	p.hold.Store(false) // the database is back
	start := time.Now()
	b, err := pgsession.New(context.Background(), pool, cfgB)
	d := time.Since(start)
	if err == nil {
		defer b.Close()
	}
	if err != nil || d > 3*time.Second {
		t.Fatalf("New joined during an attempt begun before it, database back: took %v, err %v", d, err)
	}
}

// TestShortLeaseDoesNotWaitForALongOne: the shared connection goes
// silently dead. A (lease 400ms) hangs it up within its own lease, not
// B's (6 s), and is back soon after.
func TestShortLeaseDoesNotWaitForALongOne(t *testing.T) {
	t.Parallel()
	url, p := newHoldProxy(t)
	pool := newPool(t, testDB.url)
	cfgA, cfgB := listeningThrough(t, url, 400*time.Millisecond, 6*time.Second)
	a := newStore(t, pool, cfgA)
	newStore(t, pool, cfgB)
	p.silenceAll()
	start := time.Now()
	waitFor(t, "A down", func() bool { return a.Stats().Listener != pgsession.ListenerUp })
	for a.Stats().Listener != pgsession.ListenerUp {
		if time.Since(start) > 20*time.Second {
			t.Fatal("A never back")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("A (lease 400ms) was DOWN %v after its connection went silently dead: its hang-up waited for B's lease", d)
	}
}
