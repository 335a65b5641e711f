package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/pgsession/pgsession"
)

// Memory per cached entry.
//
// Method. A Store with CacheSize = N, its scavenger and purger off, on a
// pool of as many connections as writers. First a warm-up: every writer
// saves a few sessions (connections, buffers and the store's internal maps
// reach their working size), then Clear empties the table and the cache.
// Then: GC twice, HeapAlloc (H0); N new sessions saved by the writers, each
// Save putting its entry in the cache, nothing of them kept by the suite;
// GC twice, HeapAlloc (H1). The cost of an entry is (H1-H0)/N, and beyond
// the payload is that less the encoded session's length. Then Clear again,
// GC twice, HeapAlloc (H2): (H1-H2)/N is what dropping the cache gives back
// (a cross-check; Go maps do not shrink, so it leaves out the LRU's map).
//
// The floor golang-lru itself sets: a simplelru.LRU[uint64, lruFloorEntry]
// alone (the store's LRUs are simplelru keyed by a uint64, one per lock
// stripe), with a value of the same size as the store's entry, filled with
// N entries whose values hold no data: GC twice and HeapAlloc before and
// after, per entry. What the store costs beyond the payload, less this, is
// what pgsession adds to golang-lru (the stripes, the data slice's rounding
// up to a size class, anything else an entry keeps).

type memoryOptions struct {
	entries int
	writers int
	profile string // when set, a heap profile is written there with the cache full
}

type memoryResult struct {
	Entries       int
	PayloadBytes  int     // encoded session length
	H0, H1, H2    uint64  // HeapAlloc before the fill, after it, after Clear
	PerEntry      float64 // (H1-H0)/entries
	Overhead      float64 // PerEntry - PayloadBytes
	FreedPerEntry float64 // (H1-H2)/entries
	FreedOverhead float64 // FreedPerEntry - PayloadBytes
	// LRUFloor is the heap per entry of a simplelru.LRU alone, with
	// LRUValueBytes-byte values: the floor golang-lru sets.
	LRUFloor      float64
	LRUValueBytes int
}

// lruFloorEntry has the size and shape of the store's cache entry (the
// root's entry struct: a []byte, five int64, an [8]byte and two bools, 80
// bytes on 64-bit platforms).
type lruFloorEntry struct {
	data                                         []byte
	version, deadline, lastUsed, touched, filled int64
	rest                                         [8]byte
	dead, capped                                 bool
}

// lruFloor returns the heap per entry of a simplelru.LRU[uint64,
// lruFloorEntry] of n entries: keys spread as a hash's first 8 bytes are,
// values without data.
func lruFloor(n int) (float64, error) {
	h0 := heapAlloc()
	l, err := simplelru.NewLRU[uint64, lruFloorEntry](n, nil)
	if err != nil {
		return 0, err
	}
	x := uint64(0x9e3779b97f4a7c15)
	for i := range n {
		// splitmix64: distinct, well-spread keys.
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		l.Add(z^(z>>31), lruFloorEntry{version: int64(i)})
	}
	h1 := heapAlloc()
	if l.Len() != n {
		return 0, fmt.Errorf("golang-lru floor: %d entries, want %d", l.Len(), n)
	}
	runtime.KeepAlive(l)
	return (float64(h1) - float64(h0)) / float64(n), nil
}

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func runMemory(ctx context.Context, e *env, o memoryOptions, pr progress) (_ *memoryResult, err error) {
	p := payloadSmall
	res := &memoryResult{Entries: o.entries, PayloadBytes: p.encodedSize()}
	if o.profile != "" {
		// Fine sampling from here on: every entry is allocated after this.
		defer func(rate int) { runtime.MemProfileRate = rate }(runtime.MemProfileRate)
		runtime.MemProfileRate = 512
	}
	pool, err := e.newPool(ctx, o.writers, nil)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	s, table, err := newPgsession(ctx, e, pool, pgsession.Config{
		CacheSize: o.entries, ScavengeInterval: -1, PurgeInterval: -1,
	})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, e.dropTable(table)) }()
	defer s.Close()
	if err := warm(ctx, pool, o.writers); err != nil {
		return nil, err
	}

	fill := func(n int) error {
		var next atomic.Int64
		var wg sync.WaitGroup
		errs := make([]error, o.writers)
		for w := range o.writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(n) {
					if err := saveNew(ctx, s, p); err != nil {
						errs[w] = err
						return
					}
				}
			}()
		}
		wg.Wait()
		return errors.Join(errs...)
	}

	pr.printf("memory: warm-up")
	if err := fill(min(o.entries, 20*o.writers)); err != nil {
		return nil, err
	}
	if _, err := s.Clear(ctx); err != nil {
		return nil, err
	}
	res.H0 = heapAlloc()
	pr.printf("memory: caching %d sessions", o.entries)
	if err := fill(o.entries); err != nil {
		return nil, err
	}
	res.H1 = heapAlloc()
	if o.profile != "" {
		if err := writeHeapProfile(o.profile); err != nil {
			return nil, err
		}
		pr.printf("memory: heap profile with the cache full written to %s", o.profile)
	}
	if got := s.Stats().Entries; got != int64(o.entries) {
		return nil, fmt.Errorf("the cache holds %d entries, want %d", got, o.entries)
	}
	if _, err := s.Clear(ctx); err != nil {
		return nil, err
	}
	res.H2 = heapAlloc()
	runtime.KeepAlive(s)
	n := float64(o.entries)
	res.PerEntry = (float64(res.H1) - float64(res.H0)) / n
	res.Overhead = res.PerEntry - float64(res.PayloadBytes)
	res.FreedPerEntry = (float64(res.H1) - float64(res.H2)) / n
	res.FreedOverhead = res.FreedPerEntry - float64(res.PayloadBytes)
	pr.printf("memory: the golang-lru floor, %d entries", o.entries)
	res.LRUValueBytes = int(unsafe.Sizeof(lruFloorEntry{}))
	if res.LRUFloor, err = lruFloor(o.entries); err != nil {
		return nil, err
	}
	return res, nil
}

// saveNew saves a new session with p's values through s.
func saveNew(ctx context.Context, s *pgsession.Store, p payload) error {
	r := httptest.NewRequest(http.MethodGet, "http://example.com/", nil).WithContext(ctx)
	sess, err := s.New(r, sessionName)
	if err != nil {
		return err
	}
	for k, v := range p.values() {
		sess.Values[k] = v
	}
	return s.Save(r, httptest.NewRecorder(), sess)
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
