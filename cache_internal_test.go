package pgsession

import (
	"testing"
	"time"
)

// The byte bound holds across stripes only when the adding stripe has more
// than one entry: one entry per stripe escapes it.
func TestCacheBytesBoundAcrossStripes(t *testing.T) {
	base := time.Now()
	const maxBytes = 100_000
	c := newCache(4096, maxBytes, base) // 64 stripes
	if len(c.stripes) != 64 {
		t.Fatalf("%d stripes", len(c.stripes))
	}
	data := make([]byte, maxBytes/10-entryOverhead) // the largest entry cached
	for i := 0; i < 64; i++ {
		var k keyHash
		k[0], k[31] = byte(i), byte(i) // one key per stripe
		rt := c.begin(k)
		c.add(k, c.newEntry(data, 1, base.Add(time.Hour), base), rt)
	}
	if c.size() > maxBytes {
		t.Fatalf("cache holds %d bytes in %d entries, CacheBytes is %d", c.size(), c.len(), maxBytes)
	}
}

// Count bound: same, across stripes.
func TestCacheCountBoundAcrossStripes(t *testing.T) {
	base := time.Now()
	c := newCache(4096, 0, base)
	// Fill stripe 0 to the whole bound, then one key in each other stripe.
	n := 0
	for i := 0; n < 4096; i++ {
		var k keyHash
		k[0], k[1], k[31] = byte(i), byte(i>>8), 0
		rt := c.begin(k)
		c.add(k, c.newEntry([]byte("x"), 1, base.Add(time.Hour), base), rt)
		n++
	}
	for i := 1; i < 64; i++ {
		var k keyHash
		k[0], k[31] = 0xee, byte(i)
		rt := c.begin(k)
		c.add(k, c.newEntry([]byte("x"), 1, base.Add(time.Hour), base), rt)
	}
	if c.len() > 4096 {
		t.Fatalf("cache holds %d entries, CacheSize is 4096", c.len())
	}
}
