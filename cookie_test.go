package pgsession_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/securecookie"
	"github.com/jackc/pgx/v5"

	"github.com/pgsession/pgsession"
)

func TestTokenNeverReachesDatabase(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := newStore(t, testDB.pool, cfg)
	sess, _ := login(t, s, map[any]any{"k": "v"})

	raw, err := base64.RawURLEncoding.DecodeString(sess.ID)
	if err != nil || len(raw) != 32 {
		t.Fatalf("session ID %q is not a base64url 32-byte token", sess.ID)
	}
	want := sha256.Sum256(raw)
	var dump string
	var key []byte
	err = testDB.pool.QueryRow(context.Background(),
		"SELECT key_hash, t::text FROM "+pgx.Identifier{cfg.Table}.Sanitize()+" t").Scan(&key, &dump)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(key, want[:]) {
		t.Fatalf("key_hash = %x, want sha256(token) = %x", key, want)
	}
	for _, leak := range []string{sess.ID, strings.TrimPrefix(bytesHex(raw), "")} {
		if strings.Contains(dump, leak) {
			t.Fatalf("row %q contains the raw token", dump)
		}
	}
}

func TestBadCookiesAreNewSessionsWithoutQuery(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := newStore(t, testDB.pool, cfg)
	_, c := login(t, s, map[any]any{"n": 1})

	foreign := securecookie.New(securecookie.GenerateRandomKey(32), nil)
	foreignValue, err := foreign.Encode(cookieName, []byte("anything"))
	if err != nil {
		t.Fatal(err)
	}
	flip := []byte(c.Value)
	flip[len(flip)/2] ^= 1
	cases := map[string]string{
		"tampered":    string(flip),
		"truncated":   c.Value[:len(c.Value)-5],
		"foreign key": foreignValue,
		"garbage":     "not-a-cookie",
		"empty":       "",
	}
	for name, value := range cases {
		t.Run(name, func(t *testing.T) {
			before := s.Stats()
			got, err := s.Get(request(&http.Cookie{Name: cookieName, Value: value}), cookieName)
			if err != nil || got == nil || !got.IsNew || len(got.Values) != 0 {
				t.Fatalf("got %v, %v; want a new session and no error", got, err)
			}
			st := s.Stats()
			if st.Loads != before.Loads || st.CacheHits != before.CacheHits {
				t.Fatalf("a bad cookie cost a lookup: stats %+v before %+v", st, before)
			}
			if st.InvalidCookies != before.InvalidCookies+1 {
				t.Fatalf("InvalidCookies %d, want %d", st.InvalidCookies, before.InvalidCookies+1)
			}
		})
	}
}

func TestKeyRotation(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	old := newStore(t, testDB.pool, cfg)
	_, c := login(t, old, map[any]any{"n": 1})

	newHash := bytes.Repeat([]byte("n"), 64)
	cfg.KeyPairs = [][]byte{newHash, nil, hashKey, blockKey}
	rotated := newStore(t, testDB.pool, cfg)
	sess := get(t, rotated, c)
	if sess.IsNew || sess.Values["n"] != 1 {
		t.Fatalf("a cookie signed with the previous key was not accepted: %v", sess.Values)
	}
	// An unchanged Save re-signs a cookie that came with the previous key,
	// so clients move to the new key as they come by.
	c3 := save(t, rotated, get(t, rotated, c))
	cfgNew := cfg
	cfgNew.KeyPairs = [][]byte{newHash}
	if got := get(t, newStore(t, testDB.pool, cfgNew), c3); got.IsNew || got.Values["n"] != 1 {
		t.Fatalf("the unchanged Save kept the previous key's signature: %v", got.Values)
	}
	// The rotated store signs with the new key: the old store no longer
	// accepts what it issues.
	sess.Values["n"] = 2
	c2 := save(t, rotated, sess)
	if got := get(t, old, c2); !got.IsNew {
		t.Fatal("the old key verified a cookie signed with the new one")
	}
}

func TestSaveRejectsForeignID(t *testing.T) {
	t.Parallel()
	s := newStore(t, testDB.pool, testConfig(t))
	sess := get(t, s, nil)
	sess.ID = "chosen-by-an-attacker"
	w := httptest.NewRecorder()
	if err := s.Save(request(nil), w, sess); !errors.Is(err, pgsession.ErrInvalidID) {
		t.Fatalf("Save: %v, want ErrInvalidID", err)
	}
	if responseCookie(t, w) != nil {
		t.Fatal("cookie set")
	}
}

// TestCookieFormat pins the wire format without a database: securecookie's
// encoding of token || uvarint(version), readable by plain securecookie
// and accepting what plain securecookie writes.
func TestCookieFormat(t *testing.T) {
	t.Parallel()
	oldHash := []byte("fedcba9876543210fedcba9876543210")
	keys := [][]byte{hashKey, blockKey}
	var tok [32]byte
	for i := range tok {
		tok[i] = byte(i)
	}
	plain := func(hash, block []byte) *securecookie.SecureCookie {
		return securecookie.New(hash, block).SetSerializer(securecookie.NopEncoder{}).MaxAge(0)
	}

	value, err := pgsession.SignCookie(keys, cookieName, tok, 300)
	if err != nil {
		t.Fatal(err)
	}
	var payload []byte
	if err := plain(hashKey, blockKey).Decode(cookieName, value, &payload); err != nil {
		t.Fatalf("securecookie cannot decode the store's cookie: %v", err)
	}
	want := binary.AppendUvarint(tok[:], 300)
	if !bytes.Equal(payload, want) {
		t.Fatalf("payload %x, want %x", payload, want)
	}
	got, version, primary, ok := pgsession.VerifyCookie(keys, cookieName, value)
	if !ok || got != tok || version != 300 || !primary {
		t.Fatalf("verify own cookie: %x %d primary %v ok %v", got, version, primary, ok)
	}

	// Written by securecookie itself, with an older key pair still accepted.
	old, err := plain(oldHash, nil).Encode(cookieName, binary.AppendUvarint(tok[:], 7))
	if err != nil {
		t.Fatal(err)
	}
	rotated := [][]byte{hashKey, blockKey, oldHash, nil}
	if got, version, primary, ok := pgsession.VerifyCookie(rotated, cookieName, old); !ok || got != tok || version != 7 || primary {
		t.Fatalf("verify a cookie of the old key: %x %d primary %v ok %v", got, version, primary, ok)
	}

	bad := map[string]string{
		"unknown key":  old,
		"tampered":     value[:len(value)/2] + string(value[len(value)/2]^1) + value[len(value)/2+1:],
		"truncated":    value[:len(value)-4],
		"empty":        "",
		"garbage":      "not a cookie",
		"another name": mustSign(t, keys, "other", tok, 1),
	}
	for name, v := range bad {
		if _, _, _, ok := pgsession.VerifyCookie(keys, cookieName, v); ok {
			t.Errorf("%s: accepted", name)
		}
	}
	for name, p := range map[string][]byte{
		"token only":      tok[:],
		"short":           tok[:16],
		"trailing byte":   append(binary.AppendUvarint(tok[:], 1), 0),
		"version too big": binary.AppendUvarint(tok[:], 1<<63),
	} {
		v, err := plain(hashKey, blockKey).Encode(cookieName, p)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, _, ok := pgsession.VerifyCookie(keys, cookieName, v); ok {
			t.Errorf("payload %s: accepted", name)
		}
	}
}

func mustSign(t *testing.T, keys [][]byte, name string, tok [32]byte, version int64) string {
	t.Helper()
	v, err := pgsession.SignCookie(keys, name, tok, version)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Compatibility with gorilla/securecookie, the verifier's oracle: what
// earlier versions of the store issued and read, and what plain
// securecookie (NopEncoder, MaxAge(0)) with the same key pairs writes and
// accepts.

var (
	oldHashKey  = []byte("fedcba9876543210fedcba9876543210-old-hash")
	oldBlockKey = []byte("0123456789abcdef") // AES-128
	// fuzzPairs has a pair with a block key and one without.
	fuzzPairs = [][]byte{hashKey, blockKey, oldHashKey, nil}
)

// cookieKeySets are the key pairs the compatibility tests run with.
var cookieKeySets = []struct {
	name     string
	keyPairs [][]byte
}{
	{"hash", [][]byte{hashKey}},
	{"hash+aes128", [][]byte{hashKey, oldBlockKey}},
	{"hash+aes192", [][]byte{hashKey, []byte("0123456789abcdef01234567")}},
	{"hash+aes256", [][]byte{hashKey, blockKey}},
}

// oracleCodecs are securecookie's codecs for keyPairs as earlier versions
// of the store made them.
func oracleCodecs(keyPairs [][]byte) []securecookie.Codec {
	codecs := securecookie.CodecsFromPairs(keyPairs...)
	for _, c := range codecs {
		c.(*securecookie.SecureCookie).SetSerializer(securecookie.NopEncoder{}).MaxAge(0)
	}
	return codecs
}

// oracleVerify verifies value with securecookie as earlier versions of the
// store did: the first codec that decodes it, then the payload's format.
func oracleVerify(keyPairs [][]byte, name, value string) (tok [32]byte, version int64, primary, ok bool) {
	var payload []byte
	codecs := oracleCodecs(keyPairs)
	for i, c := range codecs {
		if err := c.Decode(name, value, &payload); err == nil {
			tok, version, ok = oraclePayload(payload)
			return tok, version, ok && i == 0, ok
		}
	}
	return tok, 0, false, false
}

// oraclePayload reads token || uvarint(version), at most 1<<62.
func oraclePayload(p []byte) (tok [32]byte, version int64, ok bool) {
	if len(p) <= 32 {
		return tok, 0, false
	}
	v, n := binary.Uvarint(p[32:])
	if n <= 0 || 32+n != len(p) || v > 1<<62 {
		return tok, 0, false
	}
	copy(tok[:], p)
	return tok, int64(v), true
}

// forgeCookie returns the cookie value securecookie would accept under
// hash for name with the raw fields ts and inner, signed correctly.
func forgeCookie(hash []byte, name string, ts, inner []byte) string {
	body := append(append(append(append([]byte{}, ts...), '|'), inner...), '|')
	h := hmac.New(sha256.New, hash)
	h.Write([]byte(name + "|"))
	h.Write(body[:len(body)-1])
	return base64.URLEncoding.EncodeToString(h.Sum(body))
}

// cookieFields splits a valid cookie value into its timestamp and inner
// (still base64) fields.
func cookieFields(t testing.TB, value string) (ts, inner []byte) {
	t.Helper()
	b, err := base64.URLEncoding.DecodeString(value)
	if err != nil {
		t.Fatal(err)
	}
	parts := bytes.SplitN(b, []byte("|"), 3)
	if len(parts) != 3 {
		t.Fatalf("%q has no three fields", b)
	}
	return parts[0], parts[1]
}

// checkLikeOracle fails t unless the store's verifier decides on value as
// securecookie does, with the same token, version and key pair.
func checkLikeOracle(t testing.TB, keyPairs [][]byte, name, value string) (ok bool) {
	t.Helper()
	tok, version, primary, ok := pgsession.VerifyCookie(keyPairs, name, value)
	wtok, wversion, wprimary, wok := oracleVerify(keyPairs, name, value)
	if ok != wok || tok != wtok || version != wversion || primary != wprimary {
		t.Fatalf("value %q: got %x %d primary %v ok %v; securecookie %x %d primary %v ok %v",
			value, tok, version, primary, ok, wtok, wversion, wprimary, wok)
	}
	return ok
}

// TestCookieCompatibility: for many random tokens and versions, what the
// store signs securecookie decodes to the same payload, and what
// securecookie.EncodeMulti signs the store verifies, with every block key
// size and without one.
func TestCookieCompatibility(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, ks := range cookieKeySets {
		t.Run(ks.name, func(t *testing.T) {
			codecs := oracleCodecs(ks.keyPairs)
			for i := range 300 {
				var tok [32]byte
				for j := range tok {
					tok[j] = byte(rng.Uint32())
				}
				version := rng.Int64N(1<<62 + 1)
				switch i {
				case 0:
					version = 0
				case 1:
					version = 1 << 62
				}
				want := binary.AppendUvarint(tok[:], uint64(version))

				ours, err := pgsession.SignCookie(ks.keyPairs, cookieName, tok, version)
				if err != nil {
					t.Fatal(err)
				}
				var payload []byte
				if err := securecookie.DecodeMulti(cookieName, ours, &payload, codecs...); err != nil || !bytes.Equal(payload, want) {
					t.Fatalf("securecookie decodes the store's %q to %x, %v; want %x", ours, payload, err, want)
				}

				theirs, err := securecookie.EncodeMulti(cookieName, bytes.Clone(want), codecs...)
				if err != nil {
					t.Fatal(err)
				}
				if len(theirs) != len(ours) {
					t.Fatalf("securecookie's value has %d bytes, the store's %d", len(theirs), len(ours))
				}
				got, gversion, primary, ok := pgsession.VerifyCookie(ks.keyPairs, cookieName, theirs)
				if !ok || got != tok || gversion != version || !primary {
					t.Fatalf("verify securecookie's %q: %x %d primary %v ok %v; want %x %d", theirs, got, gversion, primary, ok, tok, version)
				}
			}
		})
	}
}

// TestCookieRotatedKeys: a cookie of any later pair verifies with primary
// false, whoever signed it; the store signs with the first pair only.
func TestCookieRotatedKeys(t *testing.T) {
	t.Parallel()
	newHash := bytes.Repeat([]byte("n"), 64)
	newBlock := bytes.Repeat([]byte("k"), 24)
	var tok [32]byte
	tok[0], tok[31] = 7, 9
	for _, rotated := range [][][]byte{
		{newHash, newBlock, hashKey, blockKey},
		{newHash, nil, hashKey, blockKey},
		{newHash, newBlock, hashKey, nil},
		{newHash, newBlock, hashKey},
		{newHash, nil, oldHashKey, oldBlockKey, hashKey, blockKey},
	} {
		old := rotated[len(rotated)-2:]
		if len(rotated)%2 == 1 {
			old = rotated[len(rotated)-1:]
		}
		for who, sign := range map[string]func() (string, error){
			"store": func() (string, error) { return pgsession.SignCookie(old, cookieName, tok, 42) },
			"securecookie": func() (string, error) {
				return securecookie.EncodeMulti(cookieName, binary.AppendUvarint(tok[:], 42), oracleCodecs(old)...)
			},
		} {
			value, err := sign()
			if err != nil {
				t.Fatal(err)
			}
			got, version, primary, ok := pgsession.VerifyCookie(rotated, cookieName, value)
			if !ok || got != tok || version != 42 || primary {
				t.Fatalf("%d pairs, old pair's cookie by %s: %x %d primary %v ok %v", (len(rotated)+1)/2, who, got, version, primary, ok)
			}
			checkLikeOracle(t, rotated, cookieName, value)
		}

		value := mustSign(t, rotated, cookieName, tok, 43)
		if got, version, primary, ok := pgsession.VerifyCookie(rotated, cookieName, value); !ok || got != tok || version != 43 || !primary {
			t.Fatalf("own cookie: %x %d primary %v ok %v", got, version, primary, ok)
		}
		checkLikeOracle(t, rotated, cookieName, value)
		checkLikeOracle(t, rotated[:2], cookieName, value)
		if _, _, _, ok := pgsession.VerifyCookie(old, cookieName, value); ok {
			t.Fatal("the old pair alone verified a cookie of the new one")
		}
	}
}

// TestCookieTampered flips every bit of every byte, truncates at every
// length and appends to a valid value: the store rejects each unless
// securecookie accepts it with the same payload (only a flip in the unused
// low bits of the last base64 character before the padding can be), and
// decides every one as securecookie does.
func TestCookieTampered(t *testing.T) {
	t.Parallel()
	var tok [32]byte
	for i := range tok {
		tok[i] = byte(3 * i)
	}
	for _, keyPairs := range [][][]byte{{hashKey}, {hashKey, blockKey}, fuzzPairs} {
		value := mustSign(t, keyPairs, cookieName, tok, 1234567)
		accepted := 0
		for i := range len(value) {
			for bit := range 8 {
				b := []byte(value)
				b[i] ^= 1 << bit
				if checkLikeOracle(t, keyPairs, cookieName, string(b)) {
					if got, version, _, _ := pgsession.VerifyCookie(keyPairs, cookieName, string(b)); got != tok || version != 1234567 {
						t.Fatalf("byte %d bit %d: accepted as %x %d", i, bit, got, version)
					}
					accepted++
				}
			}
		}
		if accepted > 8 {
			t.Errorf("%d tampered values accepted", accepted)
		}
		for n := range len(value) {
			if checkLikeOracle(t, keyPairs, cookieName, value[:n]) {
				t.Fatalf("truncated to %d bytes: accepted", n)
			}
		}
		for _, suffix := range []string{"=", "A", "AAAA", "====", "\n", "%3D"} {
			checkLikeOracle(t, keyPairs, cookieName, value+suffix)
		}
	}
}

// TestCookieFields forges correctly signed values with odd fields: the
// store decides each as securecookie does, and as expected. A signature
// that verifies does not make a value acceptable: the length limit, the
// timestamp's format and the inner encoding still apply.
func TestCookieFields(t *testing.T) {
	t.Parallel()
	var tok [32]byte
	tok[5] = 5
	payload := binary.AppendUvarint(tok[:], 300) // 34 bytes: padded in base64
	plainInner := []byte(base64.URLEncoding.EncodeToString(payload))
	_, blockInner := cookieFields(t, mustSign(t, [][]byte{hashKey, blockKey}, cookieName, tok, 300))
	ts := []byte("1700000000")
	// pad is a timestamp that makes the value exactly 4096 bytes long.
	pad := func(inner []byte, extra int) []byte {
		n := 3072 - len(inner) - 2 - sha256.Size + extra
		return append(bytes.Repeat([]byte("0"), n-len(ts)), ts...)
	}
	for _, ks := range []struct {
		name     string
		keyPairs [][]byte
		inner    []byte
	}{
		{"hash", [][]byte{hashKey}, plainInner},
		{"hash+block", [][]byte{hashKey, blockKey}, blockInner},
	} {
		for _, c := range []struct {
			name   string
			value  string
			accept bool
		}{
			{"as signed", forgeCookie(hashKey, cookieName, ts, ks.inner), true},
			{"timestamp with plus sign", forgeCookie(hashKey, cookieName, []byte("+1700000000"), ks.inner), true},
			{"negative timestamp", forgeCookie(hashKey, cookieName, []byte("-5"), ks.inner), true},
			{"timestamp 0", forgeCookie(hashKey, cookieName, []byte("0"), ks.inner), true},
			{"largest timestamp", forgeCookie(hashKey, cookieName, []byte("9223372036854775807"), ks.inner), true},
			{"smallest timestamp", forgeCookie(hashKey, cookieName, []byte("-9223372036854775808"), ks.inner), true},
			{"exactly 4096 bytes", forgeCookie(hashKey, cookieName, pad(ks.inner, 0), ks.inner), true},
			{"over 4096 bytes", forgeCookie(hashKey, cookieName, pad(ks.inner, 3), ks.inner), false},
			{"empty timestamp", forgeCookie(hashKey, cookieName, nil, ks.inner), false},
			{"sign only", forgeCookie(hashKey, cookieName, []byte("-"), ks.inner), false},
			{"timestamp not a number", forgeCookie(hashKey, cookieName, []byte("17e8"), ks.inner), false},
			{"timestamp with space", forgeCookie(hashKey, cookieName, []byte(" 1700000000"), ks.inner), false},
			{"timestamp with underscore", forgeCookie(hashKey, cookieName, []byte("1_700_000_000"), ks.inner), false},
			{"timestamp over int64", forgeCookie(hashKey, cookieName, []byte("9223372036854775808"), ks.inner), false},
			{"timestamp under int64", forgeCookie(hashKey, cookieName, []byte("-9223372036854775809"), ks.inner), false},
			{"timestamp of 20 nines", forgeCookie(hashKey, cookieName, []byte("99999999999999999999"), ks.inner), false},
			{"inner not base64", forgeCookie(hashKey, cookieName, ts, append([]byte("*"), ks.inner[1:]...)), false},
			{"inner unpadded", forgeCookie(hashKey, cookieName, ts, bytes.TrimRight(ks.inner, "=")), false},
			{"inner empty", forgeCookie(hashKey, cookieName, ts, nil), false},
			{"inner of 16 bytes", forgeCookie(hashKey, cookieName, ts, []byte(base64.URLEncoding.EncodeToString(make([]byte, 16)))), false},
			{"pipe in inner", forgeCookie(hashKey, cookieName, ts, append(append([]byte{}, ks.inner...), '|')), false},
			{"another name", forgeCookie(hashKey, "other", ts, ks.inner), false},
			{"another key", forgeCookie(oldHashKey, cookieName, ts, ks.inner), false},
			{"MAC cut short", base64.URLEncoding.EncodeToString([]byte("1700000000|" + string(ks.inner) + "|" + strings.Repeat("x", 31))), false},
			{"no MAC field", base64.URLEncoding.EncodeToString([]byte("1700000000|" + string(ks.inner))), false},
			{"raw base64", base64.RawURLEncoding.EncodeToString([]byte("1700000000|" + string(ks.inner) + "|")), false},
			{"over 4096 bytes of garbage", strings.Repeat("A", 4100), false},
		} {
			if got := checkLikeOracle(t, ks.keyPairs, cookieName, c.value); got != c.accept {
				t.Errorf("%s, %s (%d bytes): accepted %v, want %v", ks.name, c.name, len(c.value), got, c.accept)
			}
		}
	}
}

// TestCookieCounterCarry: AES-CTR's counter is the whole IV as a 128-bit
// big-endian number, carried across bytes and wrapping to zero, as
// crypto/cipher (and so securecookie) counts.
func TestCookieCounterCarry(t *testing.T) {
	t.Parallel()
	block, err := aes.NewCipher(blockKey)
	if err != nil {
		t.Fatal(err)
	}
	var tok [32]byte
	for i := range tok {
		tok[i] = byte(200 + i)
	}
	payload := binary.AppendUvarint(tok[:], 1<<62) // 41 bytes: three blocks
	for _, iv := range [][]byte{
		bytes.Repeat([]byte{0xff}, 16),
		append(make([]byte, 8), bytes.Repeat([]byte{0xff}, 8)...),
		append(bytes.Repeat([]byte{0x12}, 14), 0xff, 0xfe),
		make([]byte, 16),
	} {
		inner := append(bytes.Clone(iv), payload...)
		cipher.NewCTR(block, iv).XORKeyStream(inner[16:], inner[16:])
		value := forgeCookie(hashKey, cookieName, []byte("1"), []byte(base64.URLEncoding.EncodeToString(inner)))
		got, version, _, ok := pgsession.VerifyCookie([][]byte{hashKey, blockKey}, cookieName, value)
		if !ok || got != tok || version != 1<<62 {
			t.Fatalf("IV %x: %x %d ok %v", iv, got, version, ok)
		}
		checkLikeOracle(t, [][]byte{hashKey, blockKey}, cookieName, value)
	}
}

// TestCookieEmptyBlockKey: an empty block key means no encryption, as
// Config documents.
func TestCookieEmptyBlockKey(t *testing.T) {
	t.Parallel()
	var tok [32]byte
	value := mustSign(t, [][]byte{hashKey, {}}, cookieName, tok, 3)
	var payload []byte
	if err := securecookie.DecodeMulti(cookieName, value, &payload, oracleCodecs([][]byte{hashKey})...); err != nil {
		t.Fatalf("not a plain signed cookie: %v", err)
	}
	if _, version, primary, ok := pgsession.VerifyCookie([][]byte{hashKey, {}}, cookieName, value); !ok || version != 3 || !primary {
		t.Fatalf("verify: %d primary %v ok %v", version, primary, ok)
	}
}

// FuzzVerifyCookie: the verifier never panics and decides every value as
// securecookie does. mode picks what value is: a raw value (0), or one
// correctly signed by the first (odd) or second (even) pair with fields ts
// and inner, inner raw (1, 2) or base64 of its bytes (3, 4).
func FuzzVerifyCookie(f *testing.F) {
	var tok [32]byte
	for i := range tok {
		tok[i] = byte(i)
	}
	for _, pairs := range [][][]byte{fuzzPairs, fuzzPairs[2:]} {
		value, err := pgsession.SignCookie(pairs, cookieName, tok, 99)
		if err != nil {
			f.Fatal(err)
		}
		ts, inner := cookieFields(f, value)
		raw, _ := base64.URLEncoding.DecodeString(string(inner))
		f.Add(uint8(0), cookieName, []byte(value), []byte(nil))
		for mode := uint8(1); mode <= 4; mode++ {
			if mode <= 2 {
				f.Add(mode, cookieName, ts, inner)
			} else {
				f.Add(mode, cookieName, ts, raw)
			}
		}
	}
	f.Add(uint8(0), cookieName, []byte(""), []byte(nil))
	f.Add(uint8(1), "", []byte("-9223372036854775808"), []byte("===="))
	f.Fuzz(func(t *testing.T, mode uint8, name string, ts, inner []byte) {
		var value string
		switch hash := fuzzPairs[2*(1-int(mode)%2)]; mode % 5 {
		case 0:
			value = string(ts)
		case 1, 2:
			value = forgeCookie(hash, name, ts, inner)
		default:
			value = forgeCookie(hash, name, ts, []byte(base64.URLEncoding.EncodeToString(inner)))
		}
		checkLikeOracle(t, fuzzPairs, name, value)
	})
}

// TestRequestCookieAgreesWithNetHTTP: the store finds its cookie in the
// header without parsing every other cookie, and must find what
// r.Cookie finds.
func TestRequestCookieAgreesWithNetHTTP(t *testing.T) {
	headers := [][]string{
		nil,
		{"sid=abc"},
		{"a=1; sid=abc; b=2"},
		{"a=1;sid=abc"},
		{"  sid=abc  ;a=1"},
		{`sid="abc"`},
		{`sid="abc`},
		{"sid=a b; sid=good"},
		{"sid=first; sid=second"},
		{"a=1", "sid=second-line"},
		{"sidx=1; xsid=2"},
		{"sid="},
		{"sid"},
		{"=x; sid=y"},
		{"sid=a\\b; sid=c"},
		{"sid=a,b"},
		{";;; sid=z ;;"},
	}
	for _, h := range headers {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		for _, line := range h {
			r.Header.Add("Cookie", line)
		}
		want, err := r.Cookie(cookieName)
		got, ok := pgsession.RequestCookie(r, cookieName)
		if (err == nil) != ok || (ok && got != want.Value) {
			t.Errorf("Cookie header %q: got %q, %v; net/http %v, %v", h, got, ok, want, err)
		}
	}
}
