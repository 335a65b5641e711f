package pgsession

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"math"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/gorilla/securecookie"
	"github.com/gorilla/sessions"
)

// Tokens and the cookie format.
//
// A session's secret is a random 32-byte token. session.ID is the token in
// base64url; the table holds only its SHA-256. The cookie value is
// gorilla/securecookie's encoding (signed, and with a block key encrypted)
// of the payload
//
//	token (32 bytes) || uvarint(version)
//
// where version is the row version this client was last given, so that no
// instance serves it anything older. securecookie's own timestamp check is
// off (MaxAge(0)): the row's expires_at, on the database clock, decides.
//
// This file implements that encoding itself, byte for byte as securecookie
// v1.1.2 with NopEncoder and MaxAge(0) writes and reads it, so cookies pass
// both ways between this store, earlier versions of it and securecookie:
//
//	value = base64url(ts "|" inner "|" mac)   padded; at most 4096 bytes
//	inner = base64url(payload)                without a block key
//	inner = base64url(iv || AES-CTR(payload)) with one; iv: 16 random bytes
//	mac   = HMAC-SHA256(hash key, name "|" ts "|" inner)
//	ts    = Unix seconds at signing, in decimal
//
// It does so without securecookie's per-call costs (an hmac.New, a
// cipher.NewCTR, base64 and string conversions into fresh buffers): each key
// pair keeps its AES cipher and a pool of HMAC states, and the buffers come
// from a pool. Verifying a valid cookie allocates nothing.

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

// String returns the token as session.ID carries it, in one allocation.
func (t token) String() string {
	b := make([]byte, base64.RawURLEncoding.EncodedLen(tokenLen))
	base64.RawURLEncoding.Encode(b, t[:])
	return unsafe.String(&b[0], len(b))
}

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

// cookieMaxLength is securecookie's default MaxLength: longer values are
// neither issued nor accepted.
const cookieMaxLength = 4096

// Why a cookie was rejected, for the debug log. The values are static so
// that rejecting allocates nothing either.
var (
	errCookieNoKeys    = errors.New("no usable key pair")
	errCookieTooLong   = fmt.Errorf("value longer than %d bytes", cookieMaxLength)
	errCookieBase64    = errors.New("value is not padded base64url")
	errCookieMAC       = errors.New("signature does not verify")
	errCookieTimestamp = errors.New("timestamp field is not an integer")
	errCookieInner     = errors.New("signed value is not padded base64url")
	errCookieDecrypt   = errors.New("encrypted value shorter than its IV")
	errCookiePayload   = errors.New("payload is not a token and version")
)

// cookieCodec is one key pair. It signs and verifies exactly as a
// securecookie.SecureCookie with the same keys, NopEncoder and MaxAge(0)
// does, and is a securecookie.Codec, so that the Store's codecs keep their
// type; the store itself calls signCookie and decodeCookie, which use no
// interface and allocate less.
type cookieCodec struct {
	hashKey []byte       // nil: unusable, like securecookie's without one
	block   cipher.Block // nil: no encryption
	macs    sync.Pool    // of hash.Hash: HMAC-SHA256 under hashKey, reset
}

var _ securecookie.Codec = (*cookieCodec)(nil)

// newCodecs returns the codecs for the key pairs, as
// securecookie.CodecsFromPairs pairs them (hash key, block key, ...), all
// *cookieCodec: the first signs, all verify.
func newCodecs(keyPairs [][]byte) []securecookie.Codec {
	codecs := make([]securecookie.Codec, 0, (len(keyPairs)+1)/2)
	for i := 0; i < len(keyPairs); i += 2 {
		var blockKey []byte
		if i+1 < len(keyPairs) {
			blockKey = keyPairs[i+1]
		}
		codecs = append(codecs, newCookieCodec(keyPairs[i], blockKey))
	}
	return codecs
}

// newCookieCodec returns the codec of one key pair. An empty block key means
// no encryption, as Config documents (securecookie would make a non-nil
// empty one fail every call). A pair securecookie cannot use, with no hash
// key or a block key AES rejects, is skipped as securecookie skips it; Config
// admits neither.
func newCookieCodec(hashKey, blockKey []byte) *cookieCodec {
	c := &cookieCodec{}
	if len(hashKey) == 0 {
		return c
	}
	if len(blockKey) > 0 {
		block, err := aes.NewCipher(blockKey)
		if err != nil {
			return c
		}
		c.block = block
	}
	key := bytes.Clone(hashKey)
	c.hashKey = key
	c.macs.New = func() any { return hmac.New(sha256.New, key) }
	return c
}

// mac writes HMAC-SHA256(hash key, msg) to sum.
func (c *cookieCodec) mac(sum *[sha256.Size]byte, msg []byte) {
	h := c.macs.Get().(hash.Hash)
	h.Write(msg)
	h.Sum(sum[:0])
	h.Reset()
	c.macs.Put(h)
}

// cookieScratch holds the buffers of one sign or verify. Values that do not
// fit (no cookie this store issues) get buffers of their own.
type cookieScratch struct {
	msg     [cookieScratchLen]byte // name "|" ts "|" inner "|" mac
	inner   [cookieScratchLen]byte // the payload; with a block key, IV first
	out     [cookieScratchLen]byte // the signed value, encoded
	payload [tokenLen + binary.MaxVarintLen64]byte
	sum     [sha256.Size]byte
	ctr, ks [aes.BlockSize]byte // AES-CTR counter and key stream
}

// cookieScratchLen fits every field of a cookie this store issues, with a
// cookie name of up to a few hundred bytes.
const cookieScratchLen = 512

var cookieScratchPool = sync.Pool{New: func() any { return new(cookieScratch) }}

// scratchOf returns buf[:n], or a new slice when buf is too short.
func scratchOf(buf []byte, n int) []byte {
	if n <= len(buf) {
		return buf[:n]
	}
	return make([]byte, n)
}

// usableCodec returns codec as a *cookieCodec that can sign and verify, or
// nil.
func usableCodec(codec securecookie.Codec) *cookieCodec {
	if c, _ := codec.(*cookieCodec); c != nil && c.hashKey != nil {
		return c
	}
	return nil
}

// verifyCookie returns the payload of value, a cookie named name, and the
// index of the codec that verified it. It accepts exactly what
// securecookie.DecodeMulti with securecookie's codecs of the same key pairs
// accepts, with the same payload, which lies in sc.
func verifyCookie(codecs []securecookie.Codec, sc *cookieScratch, name, value string) (payload []byte, pair int, err error) {
	if len(value) > cookieMaxLength {
		return nil, -1, errCookieTooLong
	}
	// base64 decodes from a []byte; it only reads the value's bytes.
	src := unsafe.Slice(unsafe.StringData(value), len(value))
	// msg is name "|" followed by the decoded value, ts "|" inner "|" mac,
	// so that name "|" ts "|" inner, what the MAC covers, is its prefix.
	off := len(name) + 1
	msg := scratchOf(sc.msg[:], off+base64.URLEncoding.DecodedLen(len(src)))
	n, err := base64.URLEncoding.Decode(msg[off:], src)
	if err != nil {
		return nil, -1, errCookieBase64
	}
	copy(msg, name)
	msg[off-1] = '|'
	msg = msg[:off+n]
	// securecookie splits the decoded value at its first two pipes; the
	// MAC is all that follows the second.
	body := msg[off:]
	i := bytes.IndexByte(body, '|')
	if i < 0 {
		return nil, -1, errCookieMAC
	}
	j := bytes.IndexByte(body[i+1:], '|')
	if j < 0 {
		return nil, -1, errCookieMAC
	}
	j += i + 1
	ts, encInner, mac := body[:i], body[i+1:j], body[j+1:]
	signed := msg[:off+j]
	if len(mac) != sha256.Size {
		return nil, -1, errCookieMAC
	}
	// As DecodeMulti: the first pair whose codec decodes the value wins.
	// The checks after the MAC but decryption do not depend on the key, so
	// their failure fails every pair.
	err = errCookieNoKeys
	var inner []byte
	decoded := false
	for k, codec := range codecs {
		c := usableCodec(codec)
		if c == nil {
			continue
		}
		c.mac(&sc.sum, signed)
		if !hmac.Equal(sc.sum[:], mac) {
			err = errCookieMAC
			continue
		}
		if !decoded {
			if !validTimestamp(ts) {
				return nil, -1, errCookieTimestamp
			}
			inner = scratchOf(sc.inner[:], base64.URLEncoding.DecodedLen(len(encInner)))
			n, derr := base64.URLEncoding.Decode(inner, encInner)
			if derr != nil {
				return nil, -1, errCookieInner
			}
			inner, decoded = inner[:n], true
		}
		if c.block == nil {
			return inner, k, nil
		}
		if len(inner) <= aes.BlockSize {
			err = errCookieDecrypt
			continue
		}
		payload = inner[aes.BlockSize:]
		xorCTR(c.block, sc, inner[:aes.BlockSize], payload)
		return payload, k, nil
	}
	return nil, -1, err
}

// sign returns the cookie value of payload for a cookie named name, as
// securecookie's Encode would at Unix time now.
func (c *cookieCodec) sign(sc *cookieScratch, name string, payload []byte, now int64) (string, error) {
	inner := payload
	if c.block != nil {
		inner = scratchOf(sc.inner[:], aes.BlockSize+len(payload))
		iv := inner[:aes.BlockSize]
		if _, err := rand.Read(iv); err != nil {
			return "", fmt.Errorf("generate IV: %w", err)
		}
		copy(inner[aes.BlockSize:], payload)
		xorCTR(c.block, sc, iv, inner[aes.BlockSize:])
	}
	size := len(name) + len("|-9223372036854775808||") + base64.URLEncoding.EncodedLen(len(inner)) + sha256.Size
	msg := scratchOf(sc.msg[:], size)[:0]
	msg = append(msg, name...)
	msg = append(msg, '|')
	msg = strconv.AppendInt(msg, now, 10)
	msg = append(msg, '|')
	msg = base64.URLEncoding.AppendEncode(msg, inner)
	c.mac(&sc.sum, msg)
	msg = append(msg, '|')
	msg = append(msg, sc.sum[:]...)
	body := msg[len(name)+1:]
	if n := base64.URLEncoding.EncodedLen(len(body)); n > cookieMaxLength {
		return "", fmt.Errorf("value of %d bytes, longer than %d", n, cookieMaxLength)
	}
	out := scratchOf(sc.out[:], base64.URLEncoding.EncodedLen(len(body)))
	base64.URLEncoding.Encode(out, body)
	return string(out), nil
}

// Encode implements securecookie.Codec: value must be a []byte, which is
// signed as securecookie with NopEncoder signs it.
func (c *cookieCodec) Encode(name string, value any) (string, error) {
	b, ok := value.([]byte)
	if !ok {
		return "", errors.New("pgsession: cookie value is not a []byte")
	}
	if c.hashKey == nil {
		return "", errCookieNoKeys
	}
	sc := cookieScratchPool.Get().(*cookieScratch)
	defer cookieScratchPool.Put(sc)
	return c.sign(sc, name, b, time.Now().Unix())
}

// Decode implements securecookie.Codec: dst must be a *[]byte, which is
// set to a new slice.
func (c *cookieCodec) Decode(name, value string, dst any) error {
	p, ok := dst.(*[]byte)
	if !ok {
		return errors.New("pgsession: cookie destination is not a *[]byte")
	}
	sc := cookieScratchPool.Get().(*cookieScratch)
	defer cookieScratchPool.Put(sc)
	payload, _, err := verifyCookie([]securecookie.Codec{c}, sc, name, value)
	if err != nil {
		return err
	}
	*p = bytes.Clone(payload)
	return nil
}

// xorCTR XORs data with the AES-CTR key stream of block from iv, as
// cipher.NewCTR(block, iv).XORKeyStream does (the counter is iv as a
// 128-bit big-endian integer), without its allocations.
func xorCTR(block cipher.Block, sc *cookieScratch, iv, data []byte) {
	ctr, ks := sc.ctr[:], sc.ks[:]
	copy(ctr, iv)
	for len(data) > 0 {
		block.Encrypt(ks, ctr)
		data = data[subtle.XORBytes(data, data, ks):]
		for i := len(ctr) - 1; i >= 0; i-- {
			ctr[i]++
			if ctr[i] != 0 {
				break
			}
		}
	}
}

// validTimestamp reports whether strconv.ParseInt(string(b), 10, 64), by
// which securecookie reads the timestamp field, succeeds: an optional sign,
// then decimal digits within int64.
func validTimestamp(b []byte) bool {
	limit := uint64(math.MaxInt64)
	if len(b) > 0 && (b[0] == '+' || b[0] == '-') {
		if b[0] == '-' {
			limit++
		}
		b = b[1:]
	}
	if len(b) == 0 {
		return false
	}
	var n uint64
	for _, c := range b {
		d := uint64(c - '0')
		if d > 9 || n > (limit-d)/10 {
			return false
		}
		n = n*10 + d
	}
	return true
}

// cookiePayload reads token || uvarint(version).
func cookiePayload(payload []byte) (tok token, version int64, err error) {
	if len(payload) <= tokenLen {
		return tok, 0, errCookiePayload
	}
	v, n := binary.Uvarint(payload[tokenLen:])
	if n <= 0 || tokenLen+n != len(payload) || v > 1<<62 {
		return tok, 0, errCookiePayload
	}
	copy(tok[:], payload)
	return tok, int64(v), nil
}

// setCookie sets the cookie for tok at version. v, if not nil, is the
// request's cookie: when it is this session's, the header is made as
// writeCookieOf says.
func (s *Store) setCookie(w http.ResponseWriter, v *verified, session *sessions.Session, opts *sessions.Options, tok token, version int64) error {
	name := session.Name()
	if v != nil && v.tok == tok && v.name == name {
		return s.writeCookieOf(w, v, opts, version)
	}
	value, err := s.signCookie(name, tok, version)
	if err != nil {
		return err
	}
	s.writeCookie(w, name, value, opts)
	return nil
}

// writeCookieOf sets the cookie of v's session at version, for a request
// that came with v: v's own value when it is exactly that cookie, signed
// by the current key pair (it verifies the same: securecookie's timestamp
// is not checked), else a value signed once for version and kept with v,
// for a client that keeps sending v. The whole header is kept too, and
// made again only when the attributes change.
func (s *Store) writeCookieOf(w http.ResponseWriter, v *verified, opts *sessions.Options, version int64) error {
	a := s.cookieAttrs(v.name, opts, time.Now())
	if !a.ok {
		return nil // net/http sets no cookie with this name
	}
	h := v.header.Load()
	if h == nil || h.version != version {
		value := v.value
		if !v.primary || v.version != version {
			var err error
			if value, err = s.signCookie(v.name, v.tok, version); err != nil {
				return err
			}
		}
		h = &setCookie{version: version, value: value}
	}
	if h.attrs != a {
		h = &setCookie{version: h.version, value: h.value, attrs: a, header: v.name + "=" + h.value + a.suffix}
		if len(h.header) <= maxKeptHeader {
			v.header.Store(h)
		} else { // made again each time: a long name, path or domain would outgrow the slot
			v.header.Store(&setCookie{version: h.version, value: h.value})
		}
	}
	addSetCookie(w, h.header)
	return nil
}

// maxKeptHeader bounds the Set-Cookie header a memo slot keeps (see
// memoSlotMax).
const maxKeptHeader = 288

// writeCookie adds the Set-Cookie header that
// http.SetCookie(w, sessions.NewCookie(name, value, opts)) adds, for a
// value this store signed (padded base64url, which net/http neither
// quotes nor changes). What follows name=value depends only on the name,
// the options and, for the Expires of a MaxAge, the second: it is rendered
// by net/http once per change of those and reused.
func (s *Store) writeCookie(w http.ResponseWriter, name, value string, opts *sessions.Options) {
	s.writeCookieAt(w, name, value, opts, time.Now()) // the clock NewCookie reads
}

func (s *Store) writeCookieAt(w http.ResponseWriter, name, value string, opts *sessions.Options, now time.Time) {
	if a := s.cookieAttrs(name, opts, now); a.ok {
		addSetCookie(w, name+"="+value+a.suffix)
	}
}

// setCookie is the cookie of a session at a version, and its whole
// Set-Cookie header with the attributes it was made with.
type setCookie struct {
	version int64
	value   string
	attrs   *cookieAttrs
	header  string
}

// addSetCookie adds a Set-Cookie header as Header.Add does, its key being
// canonical already.
func addSetCookie(w http.ResponseWriter, header string) {
	h := w.Header()
	h["Set-Cookie"] = append(h["Set-Cookie"], header)
}

// cookieAttrs returns the attributes of a cookie called name with opts,
// rendered at now.
func (s *Store) cookieAttrs(name string, opts *sessions.Options, now time.Time) *cookieAttrs {
	a := s.attrs.Load()
	if a == nil || a.opts != *opts || a.name != name || (opts.MaxAge > 0 && a.sec != now.Unix()) {
		a = newCookieAttrs(name, opts, now)
		s.attrs.Store(a)
	}
	return a
}

// cookieAttrs is the part of a Set-Cookie header after name=value, as
// net/http renders it for a cookie of one name and options, at one second.
type cookieAttrs struct {
	opts   sessions.Options
	name   string
	sec    int64 // Unix second the Expires of a MaxAge was rendered for
	suffix string
	ok     bool // false: the name is not one net/http sets a cookie of
}

func newCookieAttrs(name string, opts *sessions.Options, now time.Time) *cookieAttrs {
	c := sessions.NewCookie(name, "v", opts)
	if opts.MaxAge > 0 {
		c.Expires = now.Add(time.Duration(opts.MaxAge) * time.Second)
	}
	a := &cookieAttrs{opts: *opts, name: name, sec: now.Unix()}
	if str := c.String(); str != "" && strings.HasPrefix(str, name+"=v") {
		a.suffix, a.ok = str[len(name)+2:], true
	}
	return a
}

// signCookie returns the cookie value for tok at version, signed (and
// encrypted, with a block key) by the current key pair.
func (s *Store) signCookie(name string, tok token, version int64) (string, error) {
	sc := cookieScratchPool.Get().(*cookieScratch)
	defer cookieScratchPool.Put(sc)
	err := errCookieNoKeys
	// As securecookie.EncodeMulti: the first pair that can sign does.
	for _, codec := range s.codecs {
		c := usableCodec(codec)
		if c == nil {
			continue
		}
		payload := binary.AppendUvarint(append(sc.payload[:0], tok[:]...), uint64(version))
		var v string
		if v, err = c.sign(sc, name, payload, time.Now().Unix()); err == nil {
			return v, nil
		}
	}
	return "", fmt.Errorf("encode cookie: %w", err)
}

// decodeCookie verifies a cookie value and returns the token and the
// version the client was last given; primary reports that the current key
// (the first pair) signed it. A rejected cookie is logged at debug level.
func (s *Store) decodeCookie(name, value string) (tok token, version int64, primary, ok bool) {
	sc := cookieScratchPool.Get().(*cookieScratch)
	payload, pair, err := verifyCookie(s.codecs, sc, name, value)
	if err == nil {
		tok, version, err = cookiePayload(payload)
	}
	cookieScratchPool.Put(sc)
	if err != nil {
		if s.log.Enabled(context.Background(), slog.LevelDebug) {
			s.log.Debug("pgsession: cookie rejected", "name", name, "err", err)
		}
		return token{}, 0, false, false
	}
	return tok, version, pair == 0, true
}

// requestCookie returns the value of the request's first cookie called
// name, as r.Cookie does, without parsing (and allocating) every other
// cookie of the header. The value is a substring of the header: it must
// not be kept beyond the request. A value the memo holds is valid (it
// verified), so it is returned, with what it carries, without checking its
// bytes again.
func requestCookie(r *http.Request, name string, memo *cookieMemo) (string, *verified, bool) {
	for _, line := range r.Header["Cookie"] {
		for len(line) > 0 {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = textproto.TrimString(part)
			n, v, _ := strings.Cut(part, "=")
			if textproto.TrimString(n) != name {
				continue
			}
			// A quoted value, as net/http accepts it.
			if len(v) > 1 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			if m := memo.get(name, v); m != nil {
				return v, m, true
			}
			if !validCookieValue(v) {
				continue // net/http skips it, and may find a later one
			}
			return v, nil, true
		}
	}
	return "", nil, false
}

// validCookieValue reports whether net/http would accept v as a cookie
// value (RFC 6265 cookie-octets).
func validCookieValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if b := v[i]; b < 0x20 || b >= 0x7f || b == '"' || b == ';' || b == '\\' {
			return false
		}
	}
	return true
}
