package pgsession

import (
	"encoding/binary"
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// keyHash is the SHA-256 of a session token: the primary key of its row and
// of its cache entry.
type keyHash = [32]byte

// entry is one cached session, held by value in the LRU. Its data is
// never modified after it is cached, so a copy of the entry can be read
// without a lock.
//
// Its fields are ordered so that the two bools share one word: an entry is
// 80 bytes on 64-bit platforms (TestEntrySize), so that golang-lru's list
// element holding it is 144 bytes, a size class, counted in entryOverhead.
type entry struct {
	data     []byte  // encoded values, exactly as stored; never modified
	version  int64   // the row version when data was read or written
	deadline int64   // cache-clock ns by which the row has surely expired
	lastUsed int64   // cache-clock ns of the last read or write here
	touched  int64   // cache-clock ns of the last write, load or touch here (IdleTimeout)
	filled   int64   // cache-clock ns from which data is known to be the row's: written, loaded or refreshed here (MaxStale)
	rest     [8]byte // the key hash's next 8 bytes after the 8 that key the LRU (see split)
	dead     bool    // a tombstone: the session was logged out at version
	capped   bool    // the row's expiry is its session's absolute end (AbsoluteTimeout): no refresh extends it
}

// entryOverhead is what an entry costs beyond its data, counted against
// Config.CacheBytes: golang-lru's list element holding the entry (144 B),
// its map slot (about 20-40 B) and the data slice's rounding up to a size
// class. Measured in bench/ (memory scenario).
const entryOverhead = 200

// size is what e counts against the byte budget.
func (e *entry) size() int64 { return int64(len(e.data)) + entryOverhead }

// maxStripes is the most lock stripes the cache has. Each stripe is an LRU
// of its own, under its own lock.
const maxStripes = 64

// cache is the bounded in-process session cache: stripes of golang-lru's
// simplelru, each under its own lock, keyed by the first 8 bytes of the key
// hash, and bounded both in entries and in bytes. Every write goes through
// the stripe lock, so that the result of a database round trip can be
// checked against the invalidations that arrived while it was in flight.
type cache struct {
	base     time.Time     // origin of the entries' clock
	maxCount int64         // CacheSize
	maxBytes int64         // CacheBytes; 0: no byte bound
	maxEntry int64         // larger entries are not cached
	count    atomic.Int64  // entries held, in every stripe
	bytes    atomic.Int64  // what they count against maxBytes
	epoch    atomic.Uint64 // bumped by drop, with every stripe lock held
	turn     atomic.Uint64 // the stripe shrink evicts from next
	stripes  []stripe
	mask     uint64
	watch    watcher // when set, told of invalidations before they apply (Config.ReadPool); set before use
}

// watcher is told of every invalidation of one key, and of every drop of
// the whole cache, before it is applied.
type watcher interface {
	invalidated(k keyHash)
	dropped()
}

type stripe struct {
	mu       sync.Mutex                    // protects everything below
	lru      *simplelru.LRU[uint64, entry] // the cached sessions of this stripe
	inflight map[keyHash]int               // round trips of a key begun and not yet ended
	recent   map[keyHash]int64             // highest version of a key in flight invalidated since (deleteVersion: deleted)
}

// deleteVersion records a delete in stripe.recent: newer than any version.
const deleteVersion = math.MaxInt64

// trip is returned by begin and ended by add or end.
type trip struct{ epoch uint64 }

// newCache returns a cache of about size entries and at most maxBytes
// bytes (0: no byte bound), or nil (a disabled cache, on which every
// method is a cheap no-op) when size is negative. base is the origin of
// the entries' clock.
func newCache(size int, maxBytes int64, base time.Time) *cache {
	if size < 0 {
		return nil
	}
	// About 64 entries a stripe at least, so that a small cache stays
	// close to one LRU; a power of two, so a mask picks the stripe.
	n := min(maxStripes, 1<<bits.Len(uint(max(size/64, 1))-1))
	c := &cache{base: base, stripes: make([]stripe, n), mask: uint64(n - 1),
		maxCount: int64(size), maxBytes: maxBytes, maxEntry: math.MaxInt64}
	if maxBytes > 0 {
		c.maxEntry = maxBytes / 10
	}
	// The bounds are the cache's, counted across stripes: a stripe may hold
	// up to all of them, so that no stripe evicts early because the keys
	// fall unevenly. When the cache is over a bound, the stripe that added
	// evicts from its own least recently used end.
	for i := range c.stripes {
		l, err := simplelru.NewLRU[uint64, entry](size, func(_ uint64, e entry) {
			c.count.Add(-1)
			c.bytes.Add(-e.size())
		})
		if err != nil {
			panic(err) // size > 0 is checked by Config
		}
		c.stripes[i].lru = l
	}
	return c
}

// at converts a time of the store's clock to the entries' clock.
func (c *cache) at(t time.Time) int64 {
	if c == nil {
		return 0
	}
	return int64(t.Sub(c.base))
}

// newEntry returns an entry of data at version, alive until deadline, and
// used and known to be the row's at now.
func (c *cache) newEntry(data []byte, version int64, deadline, now time.Time) entry {
	t := c.at(now)
	return entry{data: data, version: version, deadline: c.at(deadline), lastUsed: t, touched: t, filled: t}
}

// split returns the LRU key of k, its first 8 bytes, and the next 8,
// which the entry keeps to tell k from another key with the same first 8.
// An entry is taken for k when 16 bytes of the SHA-256 agree (and the
// stripe, chosen by its last byte): two of this store's tokens, random 32
// bytes, whose hashes share 128 bits are as unlikely as a random UUID
// repeating, and only this store's tokens reach the cache (a cookie must
// verify). The database always matches the whole hash.
func split(k keyHash) (uint64, [8]byte) {
	return binary.LittleEndian.Uint64(k[:8]), [8]byte(k[8:16])
}

func (c *cache) stripe(k keyHash) *stripe { return &c.stripes[uint64(k[31])&c.mask] }

// getLocked returns k's entry, if the stripe holds it (and not another key
// with the same first 8 bytes).
func (s *stripe) getLocked(k keyHash, touch bool) (entry, bool) {
	short, rest := split(k)
	var e entry
	var ok bool
	if touch {
		e, ok = s.lru.Get(short)
	} else {
		e, ok = s.lru.Peek(short)
	}
	if !ok || e.rest != rest {
		return entry{}, false
	}
	return e, true
}

// get returns the entry for k if it is alive at now, marking it used now.
// With touchEvery > 0 (IdleTimeout), due reports that the entry was last
// touched at least touchEvery ns ago, and marks it touched now: the caller
// schedules a touch of its row.
func (c *cache) get(k keyHash, now time.Time, touchEvery int64) (e entry, ok, due bool) {
	if c == nil {
		return entry{}, false, false
	}
	t := c.at(now)
	s := c.stripe(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok = s.getLocked(k, true)
	if !ok || t >= e.deadline {
		return entry{}, false, false
	}
	if touchEvery > 0 && !e.dead && t-e.touched >= touchEvery {
		e.touched, due = t, true
	}
	if e.lastUsed != t || due {
		e.lastUsed = t
		short, _ := split(k)
		s.lru.Add(short, e) // the entry is already first: this only stores lastUsed
	}
	return e, true, due
}

// extend moves the deadline of k's entry, if it is still at version, out
// to deadline (a touch extended its row).
func (c *cache) extend(k keyHash, version int64, deadline time.Time) {
	if c == nil {
		return
	}
	s := c.stripe(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.getLocked(k, false); ok && e.version == version && !e.dead && c.at(deadline) > e.deadline {
		e.deadline = c.at(deadline)
		short, _ := split(k)
		s.lru.Add(short, e) // to the front: its session was just used somewhere
	}
}

// peek returns the entry for k without marking it used.
func (c *cache) peek(k keyHash) (entry, bool) {
	if c == nil {
		return entry{}, false
	}
	s := c.stripe(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.getLocked(k, false)
}

// alive reports whether e is alive at now.
func (c *cache) alive(e entry, now time.Time) bool { return c.at(now) < e.deadline }

// recentUse is how recently an entry may have been marked used for a
// Save that left it unchanged not to mark it again: by the request's own
// Get, as a rule. Idle time is measured that much short at most.
const recentUse = time.Millisecond

// touch marks k's entry, if it is still e's version, used at now.
func (c *cache) touch(k keyHash, version int64, now time.Time) {
	if c == nil {
		return
	}
	s := c.stripe(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.getLocked(k, true); ok && e.version == version {
		e.lastUsed = c.at(now)
		short, _ := split(k)
		s.lru.Add(short, e)
	}
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
// invalidation was applied, where it would live until evicted. An entry
// larger than a tenth of CacheBytes is not cached.
func (c *cache) add(k keyHash, e entry, rt trip) {
	if c == nil {
		return
	}
	s := c.stripe(k)
	s.mu.Lock()
	added := c.addLocked(s, k, e, rt)
	s.mu.Unlock()
	if added {
		c.shrink()
	}
}

// addLocked is add with s's lock held; it reports whether it cached e.
func (c *cache) addLocked(s *stripe, k keyHash, e entry, rt trip) bool {
	_, recent := s.recent[k]
	newer := s.recent[k] > e.version || (e.dead && recent)
	s.endLocked(k)
	if newer || c.epoch.Load() != rt.epoch {
		return false
	}
	short, rest := split(k)
	if old, ok := s.lru.Peek(short); ok {
		// An expired entry says nothing about versions: after a tombstone
		// expired and was purged, a session can be written again from
		// version 1.
		if old.rest == rest && old.version > e.version && old.deadline > e.lastUsed {
			return false
		}
		s.lru.Remove(short) // its size leaves the budget through the eviction callback
	}
	if e.size() > c.maxEntry {
		return false
	}
	e.rest = rest
	s.lru.Add(short, e)
	c.count.Add(1)
	c.bytes.Add(e.size())
	for c.over() && s.lru.Len() > 1 {
		s.lru.RemoveOldest()
	}
	return true
}

// over reports whether the cache holds more than its bounds allow.
func (c *cache) over() bool {
	return c.count.Load() > c.maxCount || c.maxBytes > 0 && c.bytes.Load() > c.maxBytes
}

// shrink evicts from the least recently used end of the other stripes, in
// turn, while the cache is over its bounds: the stripe that added evicts
// from its own first (see add), but cannot give up its last entry, and a
// stripe of one large entry each would otherwise keep the cache over.
// Called with no stripe lock held.
func (c *cache) shrink() {
	for range 2 * len(c.stripes) {
		if !c.over() {
			return
		}
		s := &c.stripes[c.turn.Add(1)&c.mask]
		s.mu.Lock()
		s.lru.RemoveOldest()
		s.mu.Unlock()
	}
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
	if c.watch != nil {
		c.watch.invalidated(k)
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
	if old, ok := s.getLocked(k, false); ok && old.version < version {
		short, _ := split(k)
		s.lru.Remove(short)
		return true
	}
	return false
}

// scavenge removes entries unused since before cutoff, or expired by now,
// from the least recently used end of each stripe, and stops there at the
// first entry that is neither. It returns how many it removed.
func (c *cache) scavenge(cutoff, now time.Time) int {
	if c == nil {
		return 0
	}
	cut, t := c.at(cutoff), c.at(now)
	removed := 0
	for i := range c.stripes {
		s := &c.stripes[i]
		s.mu.Lock()
		for {
			_, e, ok := s.lru.GetOldest()
			if !ok || (e.lastUsed >= cut && t < e.deadline) {
				break
			}
			s.lru.RemoveOldest()
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
	if c.watch != nil {
		c.watch.dropped()
	}
	for i := range c.stripes {
		c.stripes[i].mu.Lock()
	}
	c.epoch.Add(1)
	for i := range c.stripes {
		c.stripes[i].lru.Purge()
	}
	for i := range c.stripes {
		c.stripes[i].mu.Unlock()
	}
}

// len returns the number of entries.
func (c *cache) len() int {
	if c == nil {
		return 0
	}
	return int(c.count.Load())
}

// size returns what the entries count against the byte budget.
func (c *cache) size() int64 {
	if c == nil {
		return 0
	}
	return c.bytes.Load()
}
