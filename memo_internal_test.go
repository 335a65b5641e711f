package pgsession

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/gorilla/sessions"
)

// TestMemoSlots: the memo is a power of two of slots, at most
// memoMaxSlots and about the cache's entries, and takes at most a
// sixteenth of the byte budget; none without a cache or room.
func TestMemoSlots(t *testing.T) {
	for _, tc := range []struct {
		size     int
		maxBytes int64
		want     int
	}{
		{-1, 0, 0},
		{10_000, 0, memoMaxSlots},
		{10_000, 64 << 20, 2048},
		{10_000, 1 << 20, 32},
		{100, 0, 128},
		{0, 0, 1},
		{10_000, 16 * memoSlotMax, 1},
		{10_000, 16*memoSlotMax - 1, 0},
	} {
		got := memoSlots(tc.size, tc.maxBytes)
		if got != tc.want {
			t.Errorf("memoSlots(%d, %d) = %d, want %d", tc.size, tc.maxBytes, got, tc.want)
		}
		if tc.maxBytes > 0 && int64(got)*memoSlotMax > tc.maxBytes/16 {
			t.Errorf("memoSlots(%d, %d): %d slots take more than a sixteenth", tc.size, tc.maxBytes, got)
		}
		if m := newCookieMemo(got); (m == nil) != (got == 0) || m.bytes() != int64(got)*memoSlotMax {
			t.Errorf("newCookieMemo(%d): %v, %d bytes", got, m != nil, m.bytes())
		}
	}
}

// TestMemoSlotWithinItsBytes: a memo slot holding the largest session it
// keeps decoded (templateEntries values, templateMax bytes of data) takes
// at most memoSlotMax bytes of heap, as CacheBytes counts it. Not
// parallel: it measures the heap.
func TestMemoSlotWithinItsBytes(t *testing.T) {
	s := cookieOnlyStore([][]byte{bytes.Repeat([]byte("h"), 64), bytes.Repeat([]byte("b"), 32)})
	s.cfg.Serializer = DefaultSerializer{}
	const n = 1024
	s.memo = newCookieMemo(n)
	values := make(map[any]any, templateEntries)
	for i := range templateEntries {
		values[fmt.Sprintf("key-%d", i)] = strings.Repeat("v", 40)
	}
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	opts := &sessions.Options{Path: "/", Domain: "www.example.com", MaxAge: 86400 * 30, Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode}
	before := heap()
	for i := range 4 * n {
		tok, err := newToken()
		if err != nil {
			t.Fatal(err)
		}
		value, err := s.signCookie("session", tok, int64(i))
		if err != nil {
			t.Fatal(err)
		}
		v, ok := s.verify("session", value)
		if !ok {
			t.Fatal("verify failed")
		}
		data, err := DefaultSerializer{}.Serialize(values)
		if err != nil || len(data) > templateMax {
			t.Fatalf("%d bytes of data, %v", len(data), err)
		}
		if got, done, err := s.values(v, data); !done || err != nil || len(got) != templateEntries {
			t.Fatalf("values: %d, %v, %v", len(got), done, err)
		}
		w := httptest.NewRecorder()
		s.writeSameCookie(w, v, opts)
		if len(w.Header()["Set-Cookie"]) != 1 || v.header.Load() == nil {
			t.Fatal("no Set-Cookie header kept")
		}
	}
	grown := int64(heap()) - int64(before)
	held := 0
	for i := range s.memo.slots {
		if v := s.memo.slots[i].Load(); v != nil && v.tmpl.Load() != nil && v.header.Load() != nil {
			held++
		}
	}
	t.Logf("%d slots held, %d bytes each", held, grown/int64(held))
	if held < n/2 || grown/int64(held) > memoSlotMax {
		t.Fatalf("%d slots held, %d bytes each: more than memoSlotMax (%d)", held, grown/int64(held), memoSlotMax)
	}
	runtime.KeepAlive(s)
}
