package pgsession

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"runtime/debug"
	"sync"
	"testing"

	"github.com/gorilla/securecookie"
)

// Benchmarks of signing and verifying cookies, against securecookie for the
// same keys, and the guards that keep the verifier allocation-free.
//
//	go test -run '^$' -bench 'Cookie' -benchmem -count 5 .

var (
	benchHashKey  = bytes.Repeat([]byte("h"), 64)
	benchOldHash  = bytes.Repeat([]byte("o"), 64)
	benchBlockKey = bytes.Repeat([]byte("b"), 32)
	benchToken    = token{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}
)

const benchCookieName = "session"

// benchKeySets are the key pairs benchmarked: a hash key only, with a block
// key, and a cookie of the second pair after a rotation.
var benchKeySets = []struct {
	name     string
	keyPairs [][]byte
	signer   [][]byte // the pairs that sign the verified cookie
}{
	{"key=hash", [][]byte{benchHashKey}, [][]byte{benchHashKey}},
	{"key=hash+block", [][]byte{benchHashKey, benchBlockKey}, [][]byte{benchHashKey, benchBlockKey}},
	{"key=rotated", [][]byte{benchHashKey, benchBlockKey, benchOldHash, nil}, [][]byte{benchOldHash}},
}

// securecookieCodecs are the codecs earlier versions of the store used:
// securecookie's, with NopEncoder and MaxAge(0).
func securecookieCodecs(keyPairs [][]byte) []securecookie.Codec {
	codecs := securecookie.CodecsFromPairs(keyPairs...)
	for _, c := range codecs {
		c.(*securecookie.SecureCookie).SetSerializer(securecookie.NopEncoder{}).MaxAge(0)
	}
	return codecs
}

// securecookieVerify is decodeCookie as earlier versions of the store did
// it, with securecookie.
func securecookieVerify(codecs []securecookie.Codec, name, value string) (tok token, version int64, primary, ok bool) {
	var payload []byte
	i, err := 0, error(nil)
	for i = range codecs {
		if err = codecs[i].Decode(name, value, &payload); err == nil {
			break
		}
	}
	if err != nil {
		return tok, 0, false, false
	}
	tok, version, err = cookiePayload(payload)
	return tok, version, i == 0, err == nil
}

func benchStore(keyPairs [][]byte) *Store {
	return &Store{codecs: newCodecs(keyPairs), log: slog.New(slog.DiscardHandler)}
}

func BenchmarkVerifyCookie(b *testing.B) {
	for _, ks := range benchKeySets {
		value, err := benchStore(ks.signer).signCookie(benchCookieName, benchToken, 12345)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(ks.name+"/impl=pgsession", func(b *testing.B) {
			s := benchStore(ks.keyPairs)
			b.ReportAllocs()
			for b.Loop() {
				if _, _, _, ok := s.decodeCookie(benchCookieName, value); !ok {
					b.Fatal("rejected")
				}
			}
		})
		b.Run(ks.name+"/impl=securecookie", func(b *testing.B) {
			codecs := securecookieCodecs(ks.keyPairs)
			b.ReportAllocs()
			for b.Loop() {
				if _, _, _, ok := securecookieVerify(codecs, benchCookieName, value); !ok {
					b.Fatal("rejected")
				}
			}
		})
	}
}

func BenchmarkSignCookie(b *testing.B) {
	for _, ks := range benchKeySets[:2] {
		b.Run(ks.name+"/impl=pgsession", func(b *testing.B) {
			s := benchStore(ks.keyPairs)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.signCookie(benchCookieName, benchToken, 12345); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(ks.name+"/impl=securecookie", func(b *testing.B) {
			codecs := securecookieCodecs(ks.keyPairs)
			b.ReportAllocs()
			for b.Loop() {
				tok := benchToken
				payload := binary.AppendUvarint(tok[:], 12345)
				if _, err := securecookie.EncodeMulti(benchCookieName, payload, codecs...); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerifyCookieParallel verifies on every P at once: the pools must
// not serialize the verifiers.
func BenchmarkVerifyCookieParallel(b *testing.B) {
	for _, ks := range benchKeySets[:2] {
		b.Run(ks.name, func(b *testing.B) {
			s := benchStore(ks.keyPairs)
			value, err := s.signCookie(benchCookieName, benchToken, 12345)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, _, _, ok := s.decodeCookie(benchCookieName, value); !ok {
						b.Fatal("rejected")
					}
				}
			})
		})
	}
}

// raceEnabled reports whether the test binary was built with -race, whose
// sync.Pool drops items at random.
func raceEnabled() bool {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-race" {
				return s.Value == "true"
			}
		}
	}
	return false
}

// TestCookieAllocs pins the allocations: none to verify a valid cookie,
// one (the value) to sign, with and without a block key and for a cookie
// of a previous key pair; rejecting allocates nothing either when debug
// logging is off.
func TestCookieAllocs(t *testing.T) {
	if raceEnabled() {
		t.Skip("the race detector's sync.Pool drops items")
	}
	for _, ks := range benchKeySets {
		s := benchStore(ks.keyPairs)
		value, err := benchStore(ks.signer).signCookie(benchCookieName, benchToken, 12345)
		if err != nil {
			t.Fatal(err)
		}
		if n := testing.AllocsPerRun(100, func() {
			if _, _, _, ok := s.decodeCookie(benchCookieName, value); !ok {
				t.Fatal("rejected")
			}
		}); n != 0 {
			t.Errorf("%s: verify allocates %v times, want 0", ks.name, n)
		}
		tampered := []byte(value)
		tampered[len(tampered)/2] ^= 1
		bad := string(tampered)
		if n := testing.AllocsPerRun(100, func() {
			if _, _, _, ok := s.decodeCookie(benchCookieName, bad); ok {
				t.Fatal("accepted")
			}
		}); n != 0 {
			t.Errorf("%s: a rejection allocates %v times, want 0", ks.name, n)
		}
		if n := testing.AllocsPerRun(100, func() {
			if _, err := s.signCookie(benchCookieName, benchToken, 12345); err != nil {
				t.Fatal(err)
			}
		}); n != 1 {
			t.Errorf("%s: sign allocates %v times, want 1", ks.name, n)
		}
	}
}

// TestCookieConcurrent signs and verifies from many goroutines on one
// store's codecs, for the race detector.
func TestCookieConcurrent(t *testing.T) {
	t.Parallel()
	s := benchStore([][]byte{benchHashKey, benchBlockKey, benchOldHash, nil})
	old, err := benchStore([][]byte{benchOldHash}).signCookie(benchCookieName, benchToken, 1)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				tok := benchToken
				tok[0] = byte(g)
				value, err := s.signCookie(benchCookieName, tok, int64(i))
				if err != nil {
					t.Error(err)
					return
				}
				got, version, primary, ok := s.decodeCookie(benchCookieName, value)
				if !ok || got != tok || version != int64(i) || !primary {
					t.Errorf("own cookie: %x %d %v %v", got, version, primary, ok)
					return
				}
				if got, version, primary, ok := s.decodeCookie(benchCookieName, old); !ok || got != benchToken || version != 1 || primary {
					t.Errorf("old cookie: %x %d %v %v", got, version, primary, ok)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestCookieCodecLikeSecurecookie: the codecs, used as securecookie.Codecs,
// decode any payload securecookie encodes, of any length, as securecookie's
// own codecs do: a value with a block key but no more than an IV fails the
// pair with the block key and goes to the next, as in DecodeMulti.
func TestCookieCodecLikeSecurecookie(t *testing.T) {
	t.Parallel()
	for _, keyPairs := range [][][]byte{
		{benchHashKey},
		{benchHashKey, benchBlockKey},
		{benchHashKey, benchBlockKey, benchHashKey, nil},
		{benchOldHash, nil, benchHashKey, benchBlockKey},
	} {
		ours, theirs := newCodecs(keyPairs), securecookieCodecs(keyPairs)
		for n := range 80 {
			payload := bytes.Repeat([]byte{byte(n)}, n)
			for _, signers := range [][]securecookie.Codec{ours, theirs} {
				for _, signer := range signers {
					value, err := signer.Encode(benchCookieName, bytes.Clone(payload))
					if err != nil {
						t.Fatal(err)
					}
					var got, want []byte
					gerr := securecookie.DecodeMulti(benchCookieName, value, &got, ours...)
					werr := securecookie.DecodeMulti(benchCookieName, value, &want, theirs...)
					if (gerr == nil) != (werr == nil) || !bytes.Equal(got, want) {
						t.Fatalf("%d pairs, %d bytes: got %x, %v; securecookie %x, %v", len(ours), n, got, gerr, want, werr)
					}
				}
			}
		}
	}
}
