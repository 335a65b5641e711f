package pgsession_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
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
