package pgsession

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// keyHash is the SHA-256 of a session token: the primary key of its row and
// of its cache entry.
type keyHash = [32]byte

// entry is one cached session. Its fields never change after it is added:
// an update replaces the entry, so readers need no lock.
type entry struct {
	data     []byte    // encoded values, exactly as stored
	version  int64     // the row's version when data was read or written
	deadline time.Time // local time by which the row has surely expired
}

// nStripes is the number of lock stripes guarding cache writes.
const nStripes = 64

// cache is the bounded in-process session cache. Reads go straight to the
// LRU. Writes (fills after a load, puts after a save, removals) go through a
// stripe lock so that a fill from a database read can be checked against
// the writes that happened while that read was in flight.
type cache struct {
	lru     *lru.Cache[keyHash, *entry]
	stripes [nStripes]stripe
}

type stripe struct {
	mu  sync.Mutex    // serializes writes of the keys in this stripe
	gen atomic.Uint64 // bumped under mu by every put and removal in the stripe
}

// newCache returns a cache of size entries, or nil (a disabled cache, on
// which every method is a cheap no-op) when size is negative.
func newCache(size int) *cache {
	if size < 0 {
		return nil
	}
	l, err := lru.New[keyHash, *entry](size)
	if err != nil {
		panic(err) // size > 0 is checked by Config
	}
	return &cache{lru: l}
}

func (c *cache) stripe(k keyHash) *stripe { return &c.stripes[k[0]%nStripes] }

// get returns the entry for k, marking it recently used.
func (c *cache) get(k keyHash) (*entry, bool) {
	if c == nil {
		return nil, false
	}
	return c.lru.Get(k)
}

// peek returns the entry for k without marking it used.
func (c *cache) peek(k keyHash) (*entry, bool) {
	if c == nil {
		return nil, false
	}
	return c.lru.Peek(k)
}

// generation returns a token to pass to fill for a database read of k that
// is about to start.
func (c *cache) generation(k keyHash) uint64 {
	if c == nil {
		return 0
	}
	return c.stripe(k).gen.Load()
}

// fill adds e, read from the database, unless anything wrote or removed a
// key of k's stripe since gen was taken. This closes the fill race: a read
// that started before a write or a delete must not put the older version
// into the cache after that write's own put or removal, where it would live
// until evicted.
func (c *cache) fill(k keyHash, e *entry, gen uint64) {
	if c == nil {
		return
	}
	s := c.stripe(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen.Load() != gen {
		return
	}
	if old, ok := c.lru.Peek(k); ok && old.version >= e.version {
		return
	}
	c.lru.Add(k, e)
}

// put adds e after this instance wrote it, unless a newer version is
// already cached.
func (c *cache) put(k keyHash, e *entry) {
	if c == nil {
		return
	}
	s := c.stripe(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen.Add(1)
	if old, ok := c.lru.Peek(k); ok && old.version > e.version {
		return
	}
	c.lru.Add(k, e)
}

// remove drops k and cancels fills of it already in flight.
func (c *cache) remove(k keyHash) {
	if c == nil {
		return
	}
	s := c.stripe(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen.Add(1)
	c.lru.Remove(k)
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

func (c *cache) len() int {
	if c == nil {
		return 0
	}
	return c.lru.Len()
}

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
