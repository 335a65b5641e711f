package pgsession

import (
	"math"
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
	dead     bool      // a tombstone: the session was logged out at version

	lastUsed atomic.Int64                 // store-clock UnixNano of the last read or write here
	cookie   atomic.Pointer[signedCookie] // a cookie value signed for this version, once one is known
}

// signedCookie is a cookie value signed, with the current key, for the
// token and version of an entry.
type signedCookie struct{ name, value string }

// signed returns the cookie signed for version under name, if e has one.
func (e *entry) signed(name string, version int64) *signedCookie {
	if e == nil || e.version != version {
		return nil
	}
	if sc := e.cookie.Load(); sc != nil && sc.name == name {
		return sc
	}
	return nil
}

func newEntry(data []byte, version int64, deadline, now time.Time) *entry {
	e := &entry{data: data, version: version, deadline: deadline}
	e.touch(now)
	return e
}

func (e *entry) touch(now time.Time) { e.lastUsed.Store(now.UnixNano()) }

// nStripes is the number of lock stripes guarding cache writes.
const nStripes = 64

// cache is the bounded in-process session cache. Reads go straight to the
// LRU. Writes go through a stripe lock, so that the result of a database
// round trip can be checked against the invalidations that arrived while it
// was in flight.
type cache struct {
	lru     *lru.Cache[keyHash, *entry]
	epoch   atomic.Uint64 // bumped by drop, with every stripe lock held
	stripes [nStripes]stripe
}

type stripe struct {
	mu       sync.Mutex
	inflight map[keyHash]int   // round trips of a key begun and not yet ended; guarded by mu
	recent   map[keyHash]int64 // highest version of a key in flight invalidated since (deleteVersion: deleted); guarded by mu
}

// deleteVersion records a delete in stripe.recent: newer than any version.
const deleteVersion = math.MaxInt64

// trip is returned by begin and ended by add or end.
type trip struct{ epoch uint64 }

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

// begin is called before a database round trip whose result may be added
// for k; add or end must follow.
func (c *cache) begin(k keyHash) trip {
	if c == nil {
		return trip{}
	}
	s := c.stripe(k)
	s.mu.Lock()
	if s.inflight == nil {
		s.inflight = make(map[keyHash]int)
	}
	s.inflight[k]++
	s.mu.Unlock()
	return trip{epoch: c.epoch.Load()}
}

// end finishes a round trip that adds nothing.
func (c *cache) end(k keyHash) {
	if c == nil {
		return
	}
	s := c.stripe(k)
	s.mu.Lock()
	s.endLocked(k)
	s.mu.Unlock()
}

func (s *stripe) endLocked(k keyHash) {
	if s.inflight[k]--; s.inflight[k] > 0 {
		return
	}
	// No round trip of k that began before its invalidations is left, and
	// any that begins now reads the database after them.
	delete(s.inflight, k)
	delete(s.recent, k)
}

// add ends the round trip rt and caches e, its result, unless something
// newer is known: a newer cached version, an invalidation of a newer
// version (or a delete) of k while rt was in flight, or a drop of the whole
// cache. This closes the fill race: a read that started before a write or
// delete must not put the older version into the cache after that write's
// invalidation was applied, where it would live until evicted.
func (c *cache) add(k keyHash, e *entry, rt trip) {
	if c == nil {
		return
	}
	s := c.stripe(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	newer := s.recent[k] > e.version
	s.endLocked(k)
	if newer || c.epoch.Load() != rt.epoch {
		return
	}
	if old, ok := c.lru.Peek(k); ok && old.version > e.version {
		return
	}
	c.lru.Add(k, e)
}

// remove drops k; round trips of k in flight will not add what they read.
func (c *cache) remove(k keyHash) {
	c.invalidate(k, 0)
}

// abort ends a write's round trip that failed. The write may have committed
// all the same (an error can come after the commit), so k is dropped.
func (c *cache) abort(k keyHash) {
	if c == nil {
		return
	}
	c.remove(k)
	c.end(k)
}

// invalidate records that version of k exists (0: k was deleted), so that
// round trips in flight will not add anything older, and drops a cached
// entry older than that. It reports whether an entry was dropped.
func (c *cache) invalidate(k keyHash, version int64) bool {
	if c == nil {
		return false
	}
	if version == 0 {
		version = deleteVersion
	}
	s := c.stripe(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight[k] > 0 && s.recent[k] < version {
		if s.recent == nil {
			s.recent = make(map[keyHash]int64)
		}
		s.recent[k] = version
	}
	if old, ok := c.lru.Peek(k); ok && old.version < version {
		c.lru.Remove(k)
		return true
	}
	return false
}

// scavenge removes entries unused since before cutoff, or expired by now,
// from the least recently used end, and stops at the first entry that is
// neither. It returns how many it removed.
func (c *cache) scavenge(cutoff, now time.Time) int {
	if c == nil {
		return 0
	}
	removed := 0
	// Bounded, in case concurrent writes keep changing the oldest entry.
	for range c.lru.Len() {
		k, e, ok := c.lru.GetOldest()
		if !ok || (e.lastUsed.Load() >= cutoff.UnixNano() && now.Before(e.deadline)) {
			break
		}
		s := c.stripe(k)
		s.mu.Lock()
		if cur, ok := c.lru.Peek(k); ok && cur == e {
			c.lru.Remove(k)
			removed++
		}
		s.mu.Unlock()
	}
	return removed
}

// drop empties the cache and cancels every add in flight.
func (c *cache) drop() {
	if c == nil {
		return
	}
	for i := range c.stripes {
		c.stripes[i].mu.Lock()
	}
	c.epoch.Add(1)
	c.lru.Purge()
	for i := range c.stripes {
		c.stripes[i].mu.Unlock()
	}
}

func (c *cache) len() int {
	if c == nil {
		return 0
	}
	return c.lru.Len()
}
