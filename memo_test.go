package pgsession_test

import (
	"bytes"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
)

// TestMemoAcceptsOnlyTheValueItVerified: once a cookie is remembered as
// verified, a value that differs from it in any way, or the same value
// under another cookie name (the MAC covers the name), is verified, and
// rejected, as before.
func TestMemoAcceptsOnlyTheValueItVerified(t *testing.T) {
	t.Parallel()
	s := newStore(t, testDB.pool, testConfig(t))
	_, c := login(t, s, map[any]any{"n": 1})
	for range 3 { // remembered from the first
		if got := get(t, s, c); got.IsNew || got.Values["n"] != 1 {
			t.Fatalf("a valid cookie was not accepted: %v", got.Values)
		}
	}
	flip := []byte(c.Value)
	flip[len(flip)/2] ^= 1
	cases := []struct {
		name, cookie, value string
	}{
		{"tampered", cookieName, string(flip)},
		{"truncated", cookieName, c.Value[:len(c.Value)-4]},
		{"extended", cookieName, c.Value + "AAAA"},
		{"another name", "other", c.Value},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Stats()
			got, err := s.Get(request(&http.Cookie{Name: tc.cookie, Value: tc.value}), tc.cookie)
			if err != nil || !got.IsNew || len(got.Values) != 0 {
				t.Fatalf("got %v, %v; want a new session", got.Values, err)
			}
			if st := s.Stats(); st.InvalidCookies != before.InvalidCookies+1 {
				t.Fatalf("InvalidCookies %d, want %d", st.InvalidCookies, before.InvalidCookies+1)
			}
		})
	}
	// A quoted value is the same value, as net/http reads it.
	r := request(nil)
	r.Header.Set("Cookie", cookieName+`="`+c.Value+`"`)
	if got, err := s.Get(r, cookieName); err != nil || got.IsNew {
		t.Fatalf("the quoted cookie: %v, %v", got, err)
	}
}

// TestMemoCopiesAreIndependent: from a cookie's second request on, its
// session's values are copied from a decoded template; what one request
// does to its session.Values must never show in another's.
func TestMemoCopiesAreIndependent(t *testing.T) {
	t.Parallel()
	s := newStore(t, testDB.pool, testConfig(t))
	values := map[any]any{"id": 42, "user": "ada", "note": strings.Repeat("x", 64), "on": true}
	_, c := login(t, s, values)
	_, cb := login(t, s, map[any]any{"raw": []byte("abc"), "user": "bob"})
	for i := range 4 {
		got := get(t, s, c)
		if fmt.Sprint(got.Values) != fmt.Sprint(values) {
			t.Fatalf("request %d: %v, want %v", i, got.Values, values)
		}
		got.Values["id"] = i + 100
		got.Values["added"] = i
		delete(got.Values, "user")

		gb := get(t, s, cb)
		b, _ := gb.Values["raw"].([]byte)
		if !bytes.Equal(b, []byte("abc")) || gb.Values["user"] != "bob" {
			t.Fatalf("request %d: %v", i, gb.Values)
		}
		b[0] = 'X'
		gb.Values["user"] = "eve"
	}
	// Concurrent requests, under -race.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				got, err := s.Get(request(c), cookieName)
				if err != nil || got.Values["id"] != 42 || got.Values["user"] != "ada" {
					t.Errorf("concurrent Get: %v, %v", got.Values, err)
					return
				}
				got.Values["id"] = 0
			}
		})
	}
	wg.Wait()
}

// TestMemoFollowsChangedData: a cookie whose values are kept decoded gets
// the session's new values after a Save, with its old cookie as with the
// new one.
func TestMemoFollowsChangedData(t *testing.T) {
	t.Parallel()
	s := newStore(t, testDB.pool, testConfig(t))
	_, c := login(t, s, map[any]any{"n": 1})
	sess := get(t, s, c)
	for range 3 {
		sess = get(t, s, c)
	}
	sess.Values["n"] = 2
	c2 := save(t, s, sess)
	for _, ck := range []*http.Cookie{c, c2, c, c2} {
		if got := get(t, s, ck); got.Values["n"] != 2 {
			t.Fatalf("after the Save: n = %v, want 2", got.Values["n"])
		}
	}
	// Changed through another instance: the invalidation drops the entry,
	// and the next read loads the new data.
	other := newStore(t, testDB.pool, testConfigFor(s))
	o := get(t, other, c2)
	o.Values["n"] = 3
	c3 := save(t, other, o)
	waitFor(t, "the change reaches the first instance", func() bool { return get(t, s, c2).Values["n"] == 3 })
	if got := get(t, s, c3); got.Values["n"] != 3 {
		t.Fatalf("new cookie: n = %v, want 3", got.Values["n"])
	}
}

// TestSaveUnchangedSetsTheSameCookie: a Save of values served unchanged
// writes nothing and sets the request's own cookie again, unsigned anew.
func TestSaveUnchangedSetsTheSameCookie(t *testing.T) {
	t.Parallel()
	s := newStore(t, testDB.pool, testConfig(t))
	_, c := login(t, s, map[any]any{"n": 1, "f": 0.5, "when": time.Unix(1700000000, 0).UTC()})
	for range 3 {
		sess := get(t, s, c)
		before := s.Stats()
		w := httptest.NewRecorder()
		if err := s.Save(request(c), w, sess); err != nil {
			t.Fatal(err)
		}
		st := s.Stats()
		if st.SavesSkipped != before.SavesSkipped+1 || st.Saves != before.Saves {
			t.Fatalf("an unchanged Save wrote: %+v, before %+v", st, before)
		}
		if got := responseCookie(t, w); got == nil || got.Value != c.Value {
			t.Fatalf("cookie %v, want the request's own %q", got, c.Value)
		}
	}
}

// TestSaveSeesEveryChangeOfServedValues: values served from a decoded
// template and changed in any way that encodes differently (a key added
// or removed, a value of another type, -0 for 0, an empty []byte for a nil
// one, a time in another zone) are written, and read back as changed.
func TestSaveSeesEveryChangeOfServedValues(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := newStore(t, testDB.pool, cfg)
	other := newStore(t, testDB.pool, cfg)
	when := time.Unix(1700000000, 0).UTC()
	initial := func() map[any]any {
		return map[any]any{"n": 1, "f": 0.0, "g": float32(0), "b": []byte(nil), "when": when, "s": "x"}
	}
	changes := map[string]func(map[any]any){
		"key added":    func(v map[any]any) { v["new"] = 1 },
		"key removed":  func(v map[any]any) { delete(v, "s") },
		"other type":   func(v map[any]any) { v["n"] = int64(1) },
		"other value":  func(v map[any]any) { v["n"] = 2 },
		"negative 0":   func(v map[any]any) { v["f"] = math.Copysign(0, -1) },
		"negative 0f":  func(v map[any]any) { v["g"] = float32(math.Copysign(0, -1)) },
		"empty bytes":  func(v map[any]any) { v["b"] = []byte{} },
		"bytes":        func(v map[any]any) { v["b"] = []byte("x") },
		"another zone": func(v map[any]any) { v["when"] = when.In(time.FixedZone("X", 3600)) },
		"nil value":    func(v map[any]any) { v["s"] = nil },
	}
	for name, change := range changes {
		_, c := login(t, s, initial())
		for range 2 {
			get(t, s, c) // the second one is served from the template
		}
		sess := get(t, s, c)
		change(sess.Values)
		want := describe(sess.Values)
		before := s.Stats()
		w := httptest.NewRecorder()
		if err := s.Save(request(c), w, sess); err != nil { // with the cookie it was served to
			t.Fatalf("%s: %v", name, err)
		}
		c2 := responseCookie(t, w)
		if st := s.Stats(); st.Saves != before.Saves+1 {
			t.Errorf("%s: the Save did not write (%+v)", name, st)
			continue
		}
		if got := describe(get(t, other, c2).Values); got != want {
			t.Errorf("%s: read back %s, want %s", name, got, want)
		}
	}
}

// describe renders values with their types, floats' signs, []byte's
// nilness and times' offsets, keys sorted.
func describe(values map[any]any) string {
	parts := make([]string, 0, len(values))
	for k, v := range values {
		d := fmt.Sprintf("%#v", v)
		switch x := v.(type) {
		case time.Time:
			d = x.Format(time.RFC3339Nano)
		case float64:
			d = fmt.Sprintf("float64(%v, neg %v)", x, math.Signbit(x))
		case float32:
			d = fmt.Sprintf("float32(%v, neg %v)", x, math.Signbit(float64(x)))
		}
		parts = append(parts, fmt.Sprintf("%v=%s", k, d))
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

// TestSaveUnchangedForAStaleCookie: a client that keeps sending an older
// cookie gets the current one from an unchanged Save, signed once and then
// set again as it is.
func TestSaveUnchangedForAStaleCookie(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := newStore(t, testDB.pool, cfg)
	sess, c1 := login(t, s, map[any]any{"n": 1})
	sess.Values["n"] = 2
	w := httptest.NewRecorder()
	if err := s.Save(request(c1), w, sess); err != nil {
		t.Fatal(err)
	}
	c2 := responseCookie(t, w)
	var set []string
	for range 3 {
		sess := get(t, s, c1) // the old cookie: the session's current values
		before := s.Stats()
		w := httptest.NewRecorder()
		if err := s.Save(request(c1), w, sess); err != nil {
			t.Fatal(err)
		}
		if st := s.Stats(); st.SavesSkipped != before.SavesSkipped+1 {
			t.Fatalf("the unchanged Save wrote: %+v", st)
		}
		c := responseCookie(t, w)
		if c == nil || c.Value == c1.Value {
			t.Fatalf("cookie %v: want a newer one than the request's", c)
		}
		set = append(set, c.Value)
	}
	if set[1] != set[0] || set[2] != set[0] {
		t.Fatalf("the newer cookie was signed again: %q", set)
	}
	// It carries the current version, as the changed Save's cookie does.
	tok, version, _, ok := pgsession.VerifyCookie(cfg.KeyPairs, cookieName, set[0])
	tok2, version2, _, ok2 := pgsession.VerifyCookie(cfg.KeyPairs, cookieName, c2.Value)
	if !ok || !ok2 || tok != tok2 || version != version2 {
		t.Fatalf("the newer cookie carries version %d (ok %v), the changed Save's %d", version, ok, version2)
	}
	if got := get(t, newStore(t, testDB.pool, cfg), &http.Cookie{Name: cookieName, Value: set[0]}); got.Values["n"] != 2 {
		t.Fatalf("n = %v, want 2", got.Values["n"])
	}
}
