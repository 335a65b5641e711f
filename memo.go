package pgsession

import (
	"crypto/sha256"
	"encoding/binary"
	"hash/maphash"
	"maps"
	"math"
	"math/bits"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"
)

// The verified-cookie memo: what verifying a cookie value gave, for the
// values this store verified lately, so that a client's next requests with
// the same cookie skip the base64, the HMAC (and with a block key the AES)
// and the SHA-256 of the token.
//
// Verifying is a pure function of the key pairs, the cookie's name and its
// value: securecookie's timestamp check is off (the row's expiry decides)
// and the key pairs are fixed for the Store's life. So a value found in the
// memo is accepted exactly when verifying it again would accept it, with
// the same token and version. Only values that verified enter the memo;
// a tampered, truncated or foreign value never matches one (the whole value
// and the name are compared) and is verified, and rejected, as before.
//
// The memo is a fixed array of slots, indexed by a hash of the value under
// a per-Store random seed; a new value takes its slot's place. Slots are
// immutable once published, so a lookup is one atomic load and no lock.
// Its slots are bounded in number (memoMaxSlots) and in bytes (memoSlotMax
// each, counted within Config.CacheBytes: at most a sixteenth of it); each
// keeps a copy of its value, never the request's Cookie header it came
// from. It is on whenever the cache is.

// verified is what verifying one cookie value gave. Never modified once
// made, but for its template.
type verified struct {
	name, value string // the cookie's name and value; value is the memo's own copy
	hash        uint64 // of value, under the memo's seed
	tok         token
	k           keyHash // SHA-256 of tok
	id          string  // tok as session.ID carries it
	version     int64   // the version the client was last given
	primary     bool    // the current key pair signed it

	// The decoded values of the session data last served to this cookie,
	// set on its second request: the next requests copy the map instead of
	// decoding the data again.
	tmpl atomic.Pointer[template]

	// The cookie an unchanged Save last set for this one's session, and
	// its Set-Cookie header.
	header atomic.Pointer[setCookie]
}

// template is a session's data decoded once. Its values are immutable
// (strings share data's memory; no []byte with contents), so a shallow
// copy of the map is as good as decoding data again. Its times are in
// zones every decode shares.
type template struct {
	data   []byte // the entry's data, never modified: its address tells it apart
	values map[any]any
}

type cookieMemo struct {
	seed  maphash.Seed
	mask  uint64
	slots []atomic.Pointer[verified]
}

// memoMaxSlots bounds the memo's slots.
const memoMaxSlots = 4096

// memoSlots returns the number of slots of the memo of a cache of size
// entries and maxBytes bytes (0: no byte bound): a power of two, at most
// memoMaxSlots and, with a byte bound, at most a sixteenth of it at
// memoSlotMax bytes a slot. 0 means no memo.
func memoSlots(size int, maxBytes int64) int {
	if size < 0 {
		return 0
	}
	n := min(memoMaxSlots, 1<<bits.Len(uint(max(size, 1)-1)))
	if maxBytes > 0 {
		fit := maxBytes / 16 / memoSlotMax
		if fit < 1 {
			return 0
		}
		n = min(n, 1<<(bits.Len64(uint64(fit))-1))
	}
	return n
}

// newCacheAndMemo returns the cache of cfg and its memo of verified
// cookies, which takes its bytes from the cache's budget. A session larger
// than a tenth of the whole budget is not cached, as Config says.
func newCacheAndMemo(cfg Config) (*cache, *cookieMemo) {
	memo := newCookieMemo(memoSlots(cfg.CacheSize, cfg.CacheBytes))
	if cfg.CacheBytes <= 0 {
		return newCache(cfg.CacheSize, cfg.CacheBytes, cfg.Clock()), memo
	}
	c := newCache(cfg.CacheSize, cfg.CacheBytes-memo.bytes(), cfg.Clock())
	if c != nil {
		c.maxEntry = cfg.CacheBytes / 10
	}
	return c, memo
}

// newCookieMemo returns a memo of n slots (a power of two), or nil, a memo
// that remembers nothing, for n 0.
func newCookieMemo(n int) *cookieMemo {
	if n <= 0 {
		return nil
	}
	return &cookieMemo{seed: maphash.MakeSeed(), mask: uint64(n - 1), slots: make([]atomic.Pointer[verified], n)}
}

// bytes is the most memory the memo holds.
func (m *cookieMemo) bytes() int64 {
	if m == nil {
		return 0
	}
	return int64(len(m.slots)) * memoSlotMax
}

// get returns what verifying value, a cookie called name, gave, if the memo
// holds it, else nil.
func (m *cookieMemo) get(name, value string) *verified {
	if m == nil {
		return nil
	}
	h := maphash.String(m.seed, value)
	v := m.slots[h&m.mask].Load()
	// Two values reach the byte comparison only when their 64-bit hashes
	// under a secret seed agree, so its timing tells a forger nothing.
	if v == nil || v.hash != h || v.value != value || v.name != name {
		return nil
	}
	return v
}

// put remembers v, whose value may be the request's (a substring of its
// Cookie header): the memo keeps a copy.
func (m *cookieMemo) put(v *verified) {
	if m == nil {
		return
	}
	v.value = strings.Clone(v.value)
	v.hash = maphash.String(m.seed, v.value)
	m.slots[v.hash&m.mask].Store(v)
}

// verify verifies the cookie value called name, which the memo does not
// hold, and remembers what it carries; ok is false for a value this store's
// key pairs do not accept.
func (s *Store) verify(name, value string) (v *verified, ok bool) {
	tok, version, primary, ok := s.decodeCookie(name, value)
	if !ok {
		return nil, false
	}
	v = &verified{name: name, value: value, tok: tok, k: sha256.Sum256(tok[:]), id: tok.String(), version: version, primary: primary}
	s.memo.put(v)
	return v, true
}

// templateMax and templateEntries bound a session whose values the memo
// keeps decoded (its data in bytes, and its values), so that a slot holds
// at most memoSlotMax bytes: the verified value (about 350 bytes with its
// copy of the cookie and the ID), a newer cookie and its Set-Cookie header
// (about 400), the
// data, and a map of one group with its boxed strings (about 600).
// TestMemoSlotWithinItsBytes measures it.
const (
	templateMax     = 512
	templateEntries = 8
	memoSlotMax     = 2048
)

// values decodes data, the entry served to the cookie v, into a new map:
// a copy of v's template of data, else decoded, and then kept as v's
// template when it may be. It reports false, decoding nothing, when data
// is decoded as usual (not the default serializer's compact format, or too
// large).
func (s *Store) values(v *verified, data []byte) (map[any]any, bool, error) {
	if t := v.tmpl.Load(); t != nil && len(t.data) == len(data) && unsafe.SliceData(t.data) == unsafe.SliceData(data) {
		return maps.Clone(t.values), true, nil
	}
	if len(data) < 2 || len(data) > templateMax || data[0] != formatCompact {
		return nil, false, nil
	}
	if n, w := binary.Uvarint(data[1:]); w <= 0 || n > templateEntries {
		return nil, false, nil // counted before decoding: its boxes take room per entry
	}
	if _, ok := s.cfg.Serializer.(DefaultSerializer); !ok {
		return nil, false, nil
	}
	values := make(map[any]any)
	if err := decodeCompact(data[1:], values, true); err != nil {
		return nil, true, err
	}
	if len(values) > templateEntries {
		return values, true, nil
	}
	for _, x := range values {
		switch x := x.(type) {
		case []byte:
			if len(x) > 0 {
				return values, true, nil // mutable: every request decodes its own
			}
		case time.Time:
			if !sharedZone(x) {
				return values, true, nil // a Location of its own would outgrow the slot
			}
		}
	}
	v.tmpl.Store(&template{data: data, values: values})
	return maps.Clone(values), true, nil
}

// servedUnchanged returns the data of the session's cache entry e (if
// cached) when values are exactly what the memo decoded from it for the
// request's cookie v, so that the data need not be encoded again to tell;
// else nil.
func (s *Store) servedUnchanged(v *verified, e entry, cached bool, values map[any]any) []byte {
	if v == nil || !cached {
		return nil
	}
	t := v.tmpl.Load()
	if t == nil || len(t.data) > s.cfg.MaxLength {
		return nil
	}
	if len(e.data) != len(t.data) || unsafe.SliceData(e.data) != unsafe.SliceData(t.data) || !sameValues(values, t.values) {
		return nil
	}
	return e.data
}

// sameValues reports whether values encode exactly as tmpl, a template's
// values, do: the same keys, and values of the same types and bits. A
// value of a template is never a []byte with contents (see values), so
// comparing it with == cannot panic.
func sameValues(values, tmpl map[any]any) bool {
	if len(values) != len(tmpl) {
		return false
	}
	for k, tv := range tmpl {
		v, ok := values[k]
		if !ok {
			return false
		}
		switch t := tv.(type) {
		case float64: // -0 == +0, but they encode apart
			f, ok := v.(float64)
			if !ok || math.Float64bits(f) != math.Float64bits(t) {
				return false
			}
		case float32:
			f, ok := v.(float32)
			if !ok || math.Float32bits(f) != math.Float32bits(t) {
				return false
			}
		case []byte: // empty: nil or not
			b, ok := v.([]byte)
			if !ok || len(b) != 0 || (b == nil) != (t == nil) {
				return false
			}
		default:
			if v != tv {
				return false
			}
		}
	}
	return true
}

// sharedZone reports whether t's Location is one that every decoded time
// shares, so that keeping t costs no Location of its own: UTC, Local, or
// the unnamed whole-hour zones time.FixedZone keeps (decodeTime makes the
// others anew).
func sharedZone(t time.Time) bool {
	loc := t.Location()
	if loc == time.UTC || loc == time.Local {
		return true
	}
	name, off := t.Zone()
	return name == "" && off%3600 == 0 && off >= -12*3600 && off <= 14*3600 && loc == time.FixedZone("", off)
}
