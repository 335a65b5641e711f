package pgsession

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"testing"
	"time"
)

// BenchmarkScavengeNoneIdle measures one scavenger pass over a full cache
// in which no entry is idle: the pass must stop at the first entry, so its
// cost does not grow with the cache.
//
//	go test -run '^$' -bench ScavengeNoneIdle -benchmem .
func BenchmarkScavengeNoneIdle(b *testing.B) {
	for _, size := range []int{10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("entries=%d", size), func(b *testing.B) {
			c := newCache(size, 0, time.Now())
			now := time.Now()
			deadline := now.Add(time.Hour)
			for i := range size {
				var seed [8]byte
				binary.LittleEndian.PutUint64(seed[:], uint64(i))
				k := sha256.Sum256(seed[:])
				c.add(k, c.newEntry(nil, 1, deadline, now), c.begin(k))
			}
			if c.len() != size {
				b.Fatalf("cache holds %d, want %d", c.len(), size)
			}
			cutoff := now.Add(-5 * time.Minute)
			for b.Loop() {
				if n := c.scavenge(cutoff, now); n != 0 {
					b.Fatalf("scavenged %d fresh entries", n)
				}
			}
		})
	}
}

// BenchmarkScavengeIdle measures the cost per evicted entry.
func BenchmarkScavengeIdle(b *testing.B) {
	const size = 100_000
	c := newCache(size, 0, time.Now())
	now := time.Now()
	deadline := now.Add(time.Hour)
	keys := make([]keyHash, size)
	for i := range keys {
		var seed [8]byte
		binary.LittleEndian.PutUint64(seed[:], uint64(i))
		keys[i] = sha256.Sum256(seed[:])
	}
	later := now.Add(10 * time.Minute)
	b.ResetTimer()
	evicted := 0
	for b.Loop() {
		b.StopTimer()
		for _, k := range keys {
			c.add(k, c.newEntry(nil, 1, deadline, now), c.begin(k))
		}
		b.StartTimer()
		evicted += c.scavenge(later.Add(-5*time.Minute), later)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(max(evicted, 1)), "ns/evicted")
}
