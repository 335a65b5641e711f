package pgsession

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

func TestParseLSN(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"0/0", 0, true},
		{"0/16B3748", 0x16B3748, true},
		{"1/0", 1 << 32, true},
		{"FFFFFFFF/FFFFFFFF", 1<<64 - 1, true},
		{"a/b", 0xa<<32 | 0xb, true},
		{"", 0, false},
		{"16B3748", 0, false},
		{"1/2/3", 0, false},
		{"x/0", 0, false},
		{"100000000/0", 0, false}, // each half is 32 bits
	} {
		got, err := parseLSN(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseLSN(%q) = %#x, %v; want %#x, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestRecordEnd(t *testing.T) {
	r := &replica{pageSize: 8192, segSize: 16 << 20}
	for _, tc := range []struct{ in, want uint64 }{
		{16<<20 + 40, 16 << 20},                  // past a segment's long page header
		{16<<20 + 8192 + 24, 16<<20 + 8192},      // past a page's short header
		{16<<20 + 8192 + 40, 16<<20 + 8192 + 40}, // a record may end there
		{16<<20 + 24, 16<<20 + 24},               // inside a long header: left alone
		{16<<20 + 100, 16<<20 + 100},
	} {
		if got := r.recordEnd(tc.in); got != tc.want {
			t.Errorf("recordEnd(%#x) = %#x, want %#x", tc.in, got, tc.want)
		}
	}
}

// TestReplicaGuard walks the guard through its states without a database:
// the sampler's query is replaced by setting what it would record.
func TestReplicaGuard(t *testing.T) {
	r := newReplica(Config{ReadPool: new(pgxpool.Pool)}, nil, newCache(10, 0, time.Now()), &counters{})
	k, other := keyHash{1}, keyHash{2}

	if r.trust(k, 1000) {
		t.Fatal("trusted before the first sample: an invalidation from before start may be missing")
	}
	sampleAt(r, 100, 0)
	if !r.trust(k, 100) || r.trust(k, 99) {
		t.Fatal("after the start-up sample at 100: want trust exactly from replay 100")
	}
	r.invalidated(k)
	if r.trust(k, 1<<40) {
		t.Fatal("trusted k with its invalidation not yet sampled")
	}
	if !r.trust(other, 100) {
		t.Fatal("an invalidation of k held back another key")
	}
	sampleAt(r, 200, 0)
	if r.trust(k, 199) || !r.trust(k, 200) {
		t.Fatal("k invalidated before the sample at 200: want trust exactly from replay 200")
	}
	// Replay 200 was seen: the next sample forgets k's requirement into
	// the floor, which every answer must reach.
	sampleAt(r, 300, 0)
	if len(r.required) != 0 || r.floor != 200 {
		t.Fatalf("required %v, floor %d: want k forgotten into floor 200", r.required, r.floor)
	}
	if r.trust(other, 150) {
		t.Fatal("a standby behind the floor (restarted, or another one) was trusted")
	}
	r.dropped()
	if r.trust(other, 1<<40) {
		t.Fatal("trusted an answer after a drop not yet sampled")
	}
	sampleAt(r, 400, 0)
	if r.trust(other, 399) || !r.trust(other, 400) {
		t.Fatal("after a drop sampled at 400: want trust exactly from replay 400")
	}

	// Too many keys: they become one invalidation of everything.
	for i := range maxRememberedKeys + 1 {
		r.invalidated(keyHash{byte(i), byte(i >> 8), 7})
	}
	if n := len(r.pending) + len(r.required); n > maxRememberedKeys {
		t.Fatalf("%d keys remembered, bound %d", n, maxRememberedKeys)
	}
	if !r.allPending || r.trust(other, 1<<40) {
		t.Fatal("overflow did not fall back to an invalidation of everything")
	}
}

// sampleAt records a sample of the primary at WAL position lsn, read
// after the cache clock said at, as replica.sample does after its query.
func sampleAt(r *replica, lsn uint64, at int64) {
	r.mu.Lock()
	closed := r.batch
	r.batch++
	r.mu.Unlock()
	r.record(closed, lsn, at)
}

// TestReplicaHistory: a standby's row is dated by the newest sample its
// replay reached, and the history stays bounded yet spans past MaxStale,
// whatever the sampling interval.
func TestReplicaHistory(t *testing.T) {
	const maxStale = 32 * time.Second // samples kept 1 s apart
	r := newReplica(Config{ReadPool: new(pgxpool.Pool), MaxStale: maxStale}, nil, newCache(10, 0, time.Now()), &counters{})
	if _, ok := r.dated(1 << 40); ok {
		t.Fatal("dated a row before any sample")
	}
	// A sample every 10 ms for 100 s, the position 1000 a second.
	const step = 10 * time.Millisecond
	at := func(i int) int64 { return int64(i) * int64(step) }
	lsn := func(i int) uint64 { return uint64(i)*10 + 1 }
	const n = 10000
	for i := range n {
		sampleAt(r, lsn(i), at(i))
		if len(r.history) > sampleHistory {
			t.Fatalf("%d samples kept, bound %d", len(r.history), sampleHistory)
		}
	}
	if got, ok := r.dated(lsn(n - 1)); !ok || got != at(n-1) {
		t.Fatalf("caught up: dated %v (%v), want the newest sample's time %v", time.Duration(got), ok, time.Duration(at(n-1)))
	}
	if span := time.Duration(r.history[len(r.history)-1].at - r.history[0].at); span < maxStale {
		t.Fatalf("the history spans %v, less than MaxStale %v", span, maxStale)
	}
	// Lagging by any amount within MaxStale: dated no later than the
	// newest sample it reached (never newer than its data), and no more
	// than the spacing plus a sampling interval earlier.
	for lag := range int(maxStale / step) {
		i := n - 1 - lag
		got, ok := r.dated(lsn(i))
		if !ok || got > at(i) || at(i)-got > int64(maxStale)/(sampleHistory/2)+int64(step) {
			t.Fatalf("replayed up to sample %d (%v): dated %v (%v)", i, time.Duration(at(i)), time.Duration(got), ok)
		}
	}
	if _, ok := r.dated(lsn(0)); ok {
		t.Fatal("dated a standby behind the whole history")
	}
	// A frozen clock (a test's): the newest sample keeps being replaced,
	// the older ones stay.
	r = newReplica(Config{ReadPool: new(pgxpool.Pool), MaxStale: maxStale}, nil, newCache(10, 0, time.Now()), &counters{})
	for i := range 10 {
		sampleAt(r, lsn(i), 0)
	}
	if len(r.history) != 2 || r.history[0].lsn != lsn(0) || r.history[1].lsn != lsn(9) {
		t.Fatalf("frozen clock: history %v", r.history)
	}
}
