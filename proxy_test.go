package pgsession_test

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"syscall"

	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

type atomicTime struct{ v atomic.Pointer[time.Time] }

func (a *atomicTime) Load() time.Time   { return *a.v.Load() }
func (a *atomicTime) Store(t time.Time) { a.v.Store(&t) }

// proxy is a TCP proxy in front of the test database, so a test can take
// "the database" away from one pool and give it back.
type proxy struct {
	t      testing.TB
	target string // host:port, or a socket path when network is unix
	netw   string
	addr   string // where the proxy listens

	mu     sync.Mutex // protects ln, conns, paused
	ln     net.Listener
	conns  map[net.Conn]struct{}
	paused chan struct{} // non-nil while paused; closed by Resume
	wg     sync.WaitGroup
}

// Pause stops forwarding in both directions without closing anything: to
// the client the server has gone silent.
func (p *proxy) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused == nil {
		p.paused = make(chan struct{})
	}
}

// Resume forwards again, what was held included.
func (p *proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused != nil {
		close(p.paused)
		p.paused = nil
	}
}

// gate blocks while the proxy is paused.
func (p *proxy) gate() {
	p.mu.Lock()
	ch := p.paused
	p.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

// copyGated copies src to dst, holding data while the proxy is paused.
func (p *proxy) copyGated(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.gate()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func newProxy(t testing.TB, network, target string) *proxy {
	p := &proxy{t: t, netw: network, target: target, conns: map[net.Conn]struct{}{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.Stop)
	return p
}

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.pipe(c)
			}()
		}
	}()
}

func (p *proxy) pipe(client net.Conn) {
	p.gate()
	server, err := net.Dial(p.netw, p.target)
	if err != nil {
		client.Close()
		return
	}
	if !p.track(client, server) {
		client.Close()
		server.Close()
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		p.copyGated(dst, src)
		dst.Close()
		src.Close()
	}
	go cp(server, client)
	go cp(client, server)
	wg.Wait()
	p.untrack(client, server)
}

func (p *proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

// Stop closes the listener and every proxied connection: to the pool the
// database is gone.
func (p *proxy) Stop() {
	p.Resume()
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// Start listens again on the same address.
func (p *proxy) Start() {
	var ln net.Listener
	var err error
	for i := 0; i < 100; i++ { // the port can stay busy for a moment after close
		if ln, err = net.Listen("tcp", p.addr); err == nil || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		p.t.Fatalf("proxy restart: %v", err)
	}
	p.serve(ln)
}

// proxiedURL returns a connection string for the test database that goes
// through a new proxy.
func proxiedURL(t testing.TB) (string, *proxy) {
	t.Helper()
	requireDB(t)
	cfg, err := pgx.ParseConfig(testDB.url)
	if err != nil {
		t.Fatal(err)
	}
	network, target := "tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
	if strings.HasPrefix(cfg.Host, "/") {
		network, target = "unix", fmt.Sprintf("%s/.s.PGSQL.%d", cfg.Host, cfg.Port)
	}
	p := newProxy(t, network, target)
	host, port, _ := net.SplitHostPort(p.addr)
	cfg.Host = host
	cfg.Port = uint16(mustAtoi(t, port))
	u := &url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(cfg.User, cfg.Password),
		Host:     p.addr,
		Path:     "/" + cfg.Database,
		RawQuery: "sslmode=disable",
	}
	if cfg.Password == "" {
		u.User = url.User(cfg.User)
	}
	return u.String(), p
}

func mustAtoi(t testing.TB, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
