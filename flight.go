package pgsession

import (
	"context"
	"sync"
)

// flight collapses concurrent database loads of one key into one query.
type flight struct {
	mu    sync.Mutex // protects calls
	calls map[keyHash]*call
}

type call struct {
	done    chan struct{} // closed when res and err are set
	waiters int           // callers waiting on done; guarded by flight.mu
	res     *entry
	err     error
}

// do runs fn once for all concurrent callers with the same key. A caller
// waits for the shared result or for its own ctx to end.
func (f *flight) do(ctx context.Context, k keyHash, fn func() (*entry, error)) (res *entry, leader bool, err error) {
	f.mu.Lock()
	if c, ok := f.calls[k]; ok {
		c.waiters++
		f.mu.Unlock()
		select {
		case <-c.done:
			return c.res, false, c.err
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
	if f.calls == nil {
		f.calls = make(map[keyHash]*call)
	}
	c := &call{done: make(chan struct{})}
	f.calls[k] = c
	f.mu.Unlock()

	defer func() {
		f.mu.Lock()
		delete(f.calls, k)
		f.mu.Unlock()
		close(c.done)
	}()
	c.res, c.err = fn()
	return c.res, true, c.err
}

// waiters returns the number of callers waiting on a flight of k.
func (f *flight) waiters(k keyHash) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.calls[k]; ok {
		return c.waiters
	}
	return 0
}
