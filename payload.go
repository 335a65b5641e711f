package pgsession

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
)

// Invalidation messages.
//
// Every write and delete sends, in its own transaction, a notification on
// the store's channel. The payload is text:
//
//	1 <origin> <key>:<version> [<key>:<version> ...]
//
// where 1 is the format version, origin identifies the sending Store, key
// is the hex SHA-256 key of a session (never its token) and version is the
// row version the write produced, or 0 for a delete. A list longer than one
// payload may carry is split (see payloads).

// maxPayload is the largest notification payload PostgreSQL accepts
// (8000 bytes fails with "payload string too long").
const maxPayload = 7999

const payloadFormat = "1"

// invalidation is one item of a notification.
type invalidation struct {
	key     keyHash
	version int64 // 0: deleted
	all     bool  // every session was deleted (Clear): key and version unused
}

// clearItem is the payload item of an invalidation of everything.
const clearItem = "*"

// probeKey is the key of a probe: a notification a store sends itself to
// prove that its listener hears what goes through the pool. Its version is
// the listener's monotonic send time. No session has this key (it would be
// a SHA-256 of all zeros), and a store of an earlier version takes a probe
// for the invalidation of a session it does not have.
var probeKey = strings.Repeat("0", 64)

// probesOnly reports whether every item is a probe's.
func probesOnly(items []invalidation) bool {
	for _, it := range items {
		if it.all || it.key != (keyHash{}) {
			return false
		}
	}
	return len(items) > 0
}

// payloads renders items as notification payloads of at most maxPayload
// bytes each.
func payloads(origin string, items []invalidation) []string {
	prefix := payloadPrefix(origin)
	var out []string
	var b strings.Builder
	for _, it := range items {
		item := clearItem
		if !it.all {
			item = hex.EncodeToString(it.key[:]) + ":" + strconv.FormatInt(it.version, 10)
		}
		if b.Len() > 0 && b.Len()+1+len(item) > maxPayload {
			out = append(out, b.String())
			b.Reset()
		}
		if b.Len() == 0 {
			b.WriteString(prefix)
		} else {
			b.WriteByte(' ')
		}
		b.WriteString(item)
	}
	if b.Len() > 0 {
		out = append(out, b.String())
	}
	return out
}

// payloadPrefix is what every payload from origin starts with; the SQL
// that writes a single session appends "<key>:<version>" to it.
func payloadPrefix(origin string) string { return payloadFormat + " " + origin + " " }

var errBadPayload = errors.New("malformed invalidation payload")

// parsePayload parses a notification payload. It never panics; anything
// that is not a well-formed payload is an error.
func parsePayload(p string) (origin string, items []invalidation, err error) {
	f := strings.Fields(p)
	if len(f) < 3 || f[0] != payloadFormat || len(f[1]) == 0 || len(f[1]) > 64 {
		return "", nil, errBadPayload
	}
	items = make([]invalidation, 0, len(f)-2)
	for _, s := range f[2:] {
		if s == clearItem {
			items = append(items, invalidation{all: true})
			continue
		}
		h, v, ok := strings.Cut(s, ":")
		var it invalidation
		if !ok || len(h) != 2*len(it.key) {
			return "", nil, errBadPayload
		}
		if _, err := hex.Decode(it.key[:], []byte(h)); err != nil {
			return "", nil, errBadPayload
		}
		if it.version, err = strconv.ParseInt(v, 10, 64); err != nil || it.version < 0 {
			return "", nil, errBadPayload
		}
		items = append(items, it)
	}
	return f[1], items, nil
}

// defaultChannel derives the notification channel from the table's names:
// lower case (LISTEN folds unquoted names, pg_notify does not), and short
// enough to be an identifier.
func defaultChannel(schema, table string) string {
	name := "pgsession:" + table
	if schema != "" {
		name = "pgsession:" + schema + "." + table
	}
	name = strings.ToLower(name)
	if len(name) > maxIdentifierLen {
		sum := sha256.Sum256([]byte(name))
		name = name[:maxIdentifierLen-17] + "~" + hex.EncodeToString(sum[:8])
	}
	return name
}
