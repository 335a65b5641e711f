package pgsession

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net/http"

	"github.com/gorilla/securecookie"
	"github.com/gorilla/sessions"
)

// Tokens and the cookie format.
//
// A session's secret is a random 32-byte token. session.ID is the token in
// base64url; the table holds only its SHA-256. The cookie value is
// securecookie's encoding (signed, and with a block key encrypted) of
//
//	token (32 bytes) || uvarint(version)
//
// where version is the row version this client was last given, so that no
// instance serves it anything older. securecookie's own timestamp check is
// off: the row's expires_at, on the database clock, decides.

// tokenLen is the number of random bytes in a session token.
const tokenLen = 32

// token is a session's secret: what the cookie carries and session.ID
// names. Only its SHA-256 reaches the database.
type token [tokenLen]byte

func newToken() (token, error) {
	var t token
	if _, err := rand.Read(t[:]); err != nil {
		return t, fmt.Errorf("generate session token: %w", err)
	}
	return t, nil
}

// String returns the token as session.ID carries it.
func (t token) String() string { return base64.RawURLEncoding.EncodeToString(t[:]) }

// parseToken parses a session.ID; anything this store could not have
// issued is ErrInvalidID.
func parseToken(id string) (token, error) {
	var t token
	if len(id) != base64.RawURLEncoding.EncodedLen(tokenLen) {
		return t, fmt.Errorf("%w: %d characters", ErrInvalidID, len(id))
	}
	n, err := base64.RawURLEncoding.Decode(t[:], []byte(id))
	if err != nil || n != tokenLen {
		return t, fmt.Errorf("%w: not a token this store issued", ErrInvalidID)
	}
	return t, nil
}

// newCodecs returns the securecookie codecs for the key pairs: the first
// signs, all verify.
func newCodecs(keyPairs [][]byte) []securecookie.Codec {
	codecs := securecookie.CodecsFromPairs(keyPairs...)
	for _, c := range codecs {
		sc := c.(*securecookie.SecureCookie)
		// The cookie carries raw bytes, so no serializer is needed. Its own
		// age check is off: the row's expires_at, on the database clock,
		// decides whether a session is alive.
		sc.SetSerializer(securecookie.NopEncoder{}).MaxAge(0)
	}
	return codecs
}

// setCookie sets the cookie for tok at version. e, if not nil, is the cache
// entry of that version: a cookie already signed for it is reused (the
// signature carries no expiry the store checks), and a new one is kept on it.
func (s *Store) setCookie(w http.ResponseWriter, session *sessions.Session, opts *sessions.Options, tok token, version int64, e *entry) error {
	name := session.Name()
	var value string
	if sc := e.signed(name, version); sc != nil {
		value = sc.value
	} else {
		v, err := s.signCookie(name, tok, version)
		if err != nil {
			return err
		}
		value = v
		if e != nil && e.version == version {
			e.cookie.Store(&signedCookie{name: name, value: value})
		}
	}
	http.SetCookie(w, sessions.NewCookie(name, value, opts))
	return nil
}

// signCookie returns the cookie value for tok at version, signed (and
// encrypted, with a block key) by the current key pair.
func (s *Store) signCookie(name string, tok token, version int64) (string, error) {
	payload := binary.AppendUvarint(tok[:], uint64(version))
	v, err := securecookie.EncodeMulti(name, payload, s.codecs...)
	if err != nil {
		return "", fmt.Errorf("encode cookie: %w", err)
	}
	return v, nil
}

// decodeCookie verifies a cookie value and returns the token and the
// version the client was last given; primary reports that the current key
// (the first pair) signed it.
func (s *Store) decodeCookie(name, value string) (tok token, version int64, primary, ok bool) {
	var payload []byte
	i, err := 0, error(nil)
	for i = range s.codecs {
		if err = s.codecs[i].Decode(name, value, &payload); err == nil {
			break
		}
	}
	if err != nil {
		s.log.Debug("pgsession: cookie rejected", "name", name, "err", err)
		return tok, 0, false, false
	}
	if len(payload) <= tokenLen {
		return tok, 0, false, false
	}
	v, n := binary.Uvarint(payload[tokenLen:])
	if n <= 0 || tokenLen+n != len(payload) || v > 1<<62 {
		return tok, 0, false, false
	}
	copy(tok[:], payload)
	return tok, int64(v), i == 0, true
}
