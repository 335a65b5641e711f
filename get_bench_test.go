package pgsession_test

import (
	"strings"
	"testing"
)

// BenchmarkGetCacheHit measures Store.New of a cached 300-byte session
// (an int, two short strings and a 256-byte string), without and with a
// block key: the cost every request pays.
//
//	go test -run '^$' -bench GetCacheHit -benchmem .
func BenchmarkGetCacheHit(b *testing.B) {
	for _, tc := range []struct {
		name string
		keys [][]byte
	}{{"hash-key", [][]byte{hashKey}}, {"block-key", [][]byte{hashKey, blockKey}}} {
		b.Run(tc.name, func(b *testing.B) {
			cfg := testConfig(b)
			cfg.KeyPairs = tc.keys
			s := newStore(b, testDB.pool, cfg)
			_, c := login(b, s, map[any]any{"id": 42, "user": "ada", "role": "admin", "note": strings.Repeat("x", 256)})
			r := request(c)
			get(b, s, c) // cached now
			b.ReportAllocs()
			for b.Loop() {
				sess, err := s.New(r, cookieName)
				if err != nil || sess.IsNew {
					b.Fatal("not a hit", err)
				}
			}
			if st := s.Stats(); st.CacheHits < int64(b.N) {
				b.Fatalf("%d hits for %d gets", st.CacheHits, b.N)
			}
		})
	}
}
