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
	sampleAt(r, 100)
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
	sampleAt(r, 200)
	if r.trust(k, 199) || !r.trust(k, 200) {
		t.Fatal("k invalidated before the sample at 200: want trust exactly from replay 200")
	}
	// Replay 200 was seen: the next sample forgets k's requirement into
	// the floor, which every answer must reach.
	sampleAt(r, 300)
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
	sampleAt(r, 400)
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

// sampleAt records a sample of the primary at WAL position lsn, as
// replica.sample does after its query.
func sampleAt(r *replica, lsn uint64) {
	r.mu.Lock()
	closed := r.batch
	r.batch++
	r.mu.Unlock()
	r.record(closed, lsn)
}
