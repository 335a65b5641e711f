package pgsession_test

import (
	"net/http/httptest"
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

// BenchmarkSaveUnchanged measures a request that loads a cached session
// (300 bytes as above, or 4 KB: one 3,990-byte string) and saves it
// unchanged (Get, then Save), as the comparison in bench/ does: what a
// handler that always saves pays.
//
//	go test -run '^$' -bench SaveUnchanged -benchmem .
func BenchmarkSaveUnchanged(b *testing.B) {
	for _, size := range []struct {
		name string
		note int
	}{{"300B", 256}, {"4KB", 3990}} {
		b.Run(size.name, func(b *testing.B) {
			s := newStore(b, testDB.pool, testConfig(b))
			_, c := login(b, s, map[any]any{"id": 42, "user": "ada", "role": "admin", "note": strings.Repeat("x", size.note)})
			r := request(c)
			w := httptest.NewRecorder()
			get(b, s, c)
			b.ReportAllocs()
			for b.Loop() {
				sess, err := s.New(r, cookieName)
				if err != nil || sess.IsNew {
					b.Fatal("not a hit", err)
				}
				clear(w.Header())
				if err := s.Save(r, w, sess); err != nil {
					b.Fatal(err)
				}
			}
			if st := s.Stats(); st.SavesSkipped < int64(b.N) {
				b.Fatalf("%d saves skipped for %d saves", st.SavesSkipped, b.N)
			}
		})
	}
}
