package pgsession

import "sync"

// gate counts the write operations under way, so that Close can let them
// finish before it stops the store: none is lost or left half done.
type gate struct {
	mu     sync.Mutex // protects n, closed
	idle   sync.Cond  // signalled when n drops to 0 while closed
	n      int        // write operations in progress
	closed bool
}

// enter registers a write operation, or reports that the store is closing.
// leave must follow a true result.
func (g *gate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.n++
	return true
}

func (g *gate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n--
	if g.n == 0 && g.closed {
		g.idle.Broadcast()
	}
}

// close refuses new write operations and waits for those under way.
func (g *gate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	if g.idle.L == nil {
		g.idle.L = &g.mu
	}
	for g.n > 0 {
		g.idle.Wait()
	}
}
