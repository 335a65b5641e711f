package pgsession

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

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
// keeps decoded (templateEntries values, templateMax bytes of data) and
// its Set-Cookie header takes at most memoSlotMax bytes of heap, as
// CacheBytes counts it, whatever the values: strings, times in zones every
// decode shares, and times in a zone of their own (India, +05:30), which
// would each bring a Location of their own (found by a second reader).
// Not parallel: it measures the heap.
func TestMemoSlotWithinItsBytes(t *testing.T) {
	ist := time.FixedZone("IST", 5*3600+30*60)
	for _, tc := range []struct {
		name      string
		value     func(i int) any
		templated bool
	}{
		{"strings", func(int) any { return strings.Repeat("v", 50) }, true},
		{"UTC times", func(i int) any { return time.Unix(1700000000+int64(i), 0).UTC() }, true},
		{"whole-hour times", func(i int) any { return time.Unix(1700000000+int64(i), 0).In(time.FixedZone("", 3600)) }, true},
		{"+05:30 times", func(i int) any { return time.Unix(1700000000+int64(i), 0).In(ist) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			values := make(map[any]any, templateEntries)
			for i := range templateEntries {
				values[fmt.Sprintf("key-%d", i)] = tc.value(i)
			}
			perSlot, templated := measureMemoSlot(t, values)
			t.Logf("%d bytes a slot, %d slots templated", perSlot, templated)
			if perSlot > memoSlotMax {
				t.Errorf("%d bytes a slot: more than memoSlotMax (%d)", perSlot, memoSlotMax)
			}
			if (templated > 0) != tc.templated {
				t.Errorf("%d slots templated, want templated %v", templated, tc.templated)
			}
		})
	}
}

// measureMemoSlot fills a memo of 1,024 slots with cookies served values,
// each from its second request on (a template where it may keep one) and
// saved unchanged at a newer version (a newer cookie and its Set-Cookie
// header), and returns the heap per slot
// held and how many slots hold a template.
func measureMemoSlot(t *testing.T, values map[any]any) (perSlot int64, templated int) {
	s := cookieOnlyStore([][]byte{bytes.Repeat([]byte("h"), 64), bytes.Repeat([]byte("b"), 32)})
	s.cfg.Serializer = DefaultSerializer{}
	s.cfg.MaxLength = DefaultMaxLength
	const n = 1024
	s.memo = newCookieMemo(n)
	// Attributes that make the longest header a slot keeps.
	opts := &sessions.Options{Path: "/", MaxAge: 86400 * 30, Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode}
	opts.Domain = strings.Repeat("d", maxKeptHeader-len(headerOf(t, s, opts))-len("; Domain=")-8)
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
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
		if i == 0 {
			t.Logf("%d bytes of data, a header of %d", len(data), len(headerOf(t, s, opts)))
		}
		if got, done, err := s.values(v, data); !done || err != nil || len(got) != len(values) {
			t.Fatalf("values: %d, %v, %v", len(got), done, err)
		}
		w := httptest.NewRecorder()
		// A newer version than the cookie's: the most a slot keeps.
		if err := s.writeCookieOf(w, v, opts, v.version+1); err != nil || len(w.Header()["Set-Cookie"]) != 1 {
			t.Fatalf("no Set-Cookie header: %v", err)
		}
		if h := v.header.Load(); h == nil || h.header == "" {
			t.Fatalf("no Set-Cookie header kept (%d bytes)", len(w.Header()["Set-Cookie"][0]))
		}
	}
	grown := int64(heap()) - int64(before)
	held := 0
	for i := range s.memo.slots {
		if v := s.memo.slots[i].Load(); v != nil {
			held++
			if v.tmpl.Load() != nil {
				templated++
			}
		}
	}
	if held < n/2 {
		t.Fatalf("%d slots held of %d", held, n)
	}
	runtime.KeepAlive(s)
	return grown / int64(held), templated
}

// TestCacheAndMemoShareCacheBytes: the memo's bytes come out of
// CacheBytes, and the largest session cached is still a tenth of it.
func TestCacheAndMemoShareCacheBytes(t *testing.T) {
	cfg := Config{CacheSize: 10_000, CacheBytes: 64 << 20, Clock: time.Now}
	c, m := newCacheAndMemo(cfg)
	if m == nil || c.maxBytes+m.bytes() != cfg.CacheBytes || c.maxEntry != cfg.CacheBytes/10 {
		t.Fatalf("cache %d bytes, largest entry %d, memo %d bytes; want %d in all, a tenth each",
			c.maxBytes, c.maxEntry, m.bytes(), cfg.CacheBytes)
	}
	cfg.CacheBytes = 0 // no byte bound
	if c, m := newCacheAndMemo(cfg); c.maxBytes != 0 || m.bytes() != memoMaxSlots*memoSlotMax {
		t.Fatalf("without a byte bound: cache %d bytes, memo %d", c.maxBytes, m.bytes())
	}
	cfg.CacheSize = -1
	if c, m := newCacheAndMemo(cfg); c != nil || m != nil {
		t.Fatal("a disabled cache has a memo")
	}
}

// headerOf returns the Set-Cookie header of a cookie at a new version
// with opts, as a memo slot would keep it.
func headerOf(t *testing.T, s *Store, opts *sessions.Options) string {
	tok, err := newToken()
	if err != nil {
		t.Fatal(err)
	}
	value, err := s.signCookie("session", tok, 1)
	if err != nil {
		t.Fatal(err)
	}
	return "session=" + value + s.cookieAttrs("session", opts, time.Now()).suffix
}
