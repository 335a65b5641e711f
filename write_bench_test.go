package pgsession_test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgsession/pgsession"
)

// BenchmarkWriteFloor splits a changed Save of a 300-byte session into
// what the database does and what the store does around it:
//   - save: Get and Save of a changed value, as a handler does;
//   - statement: the store's own upsert alone, through the same pool,
//     with the parameters a Save passes;
//   - floor: the raw upsert with pg_notify that bench/ compares Save with
//     (new data, a new expiry, the version bumped, one notification).
//
// All three notify the store's channel, which its listener drains. The
// sub-benchmarks run one after another: compare them with -count and
// benchstat, on a quiet machine.
//
//	go test -run '^$' -bench WriteFloor -count 10 . | tee /tmp/floor.txt; benchstat /tmp/floor.txt
func BenchmarkWriteFloor(b *testing.B) {
	ctx := context.Background()
	cfg := testConfig(b)
	cfg.KeyPairs = [][]byte{hashKey}
	cfg.PurgeInterval = -1
	s := newStore(b, testDB.pool, cfg)
	upsert, prefix := pgsession.SingleUpsert(s)
	channel := pgsession.Channel(s)
	floor := `WITH w AS (INSERT INTO ` + pgx.Identifier{cfg.Table}.Sanitize() + ` AS s (key_hash, data, expires_at)
		SELECT $1::bytea, $2::bytea, now() + $3::bigint * interval '1 microsecond'
		WHERE (SELECT set_config('pgsession.store_write', 'on', true)) = 'on'
		ON CONFLICT (key_hash) DO UPDATE
		SET data = excluded.data, expires_at = excluded.expires_at,
			version = s.version + 1, updated_at = now()
		RETURNING version)
		SELECT w.version FROM w, pg_notify($4, $5 || encode($1::bytea, 'hex') || ':' || w.version)`
	lifetime := (time.Duration(pgsession.DefaultCookieMaxAge) * time.Second).Microseconds()
	lag := pgsession.DefaultRefreshAfter.Microseconds()
	data := make([]byte, 301)
	newKey := func() []byte {
		k := make([]byte, 32)
		_, _ = rand.Read(k)
		return k
	}

	b.Run("save", func(b *testing.B) {
		_, c := login(b, s, map[any]any{"id": 42, "user": "ada", "role": "admin", "note": strings.Repeat("x", 256)})
		r := request(c)
		w := httptest.NewRecorder()
		n := 0
		for b.Loop() {
			req := new(http.Request)
			*req = *r // gorilla's registry caches a session per request
			sess, err := s.Get(req, cookieName)
			if err != nil || sess.IsNew {
				b.Fatal("not a hit", err)
			}
			n++
			sess.Values["id"] = n
			clear(w.Header())
			if err := s.Save(req, w, sess); err != nil {
				b.Fatal(err)
			}
		}
	})
	// upserts runs write, one statement, on a key of its own with new
	// data each time.
	upserts := func(write func(k, data []byte) error) func(b *testing.B) {
		return func(b *testing.B) {
			k := newKey()
			var n uint64
			for b.Loop() {
				n++
				binary.LittleEndian.PutUint64(data, n)
				if err := write(k, data); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.Run("statement", upserts(func(k, data []byte) error {
		var version, remaining int64
		return testDB.pool.QueryRow(ctx, upsert, k, data, lifetime, lag, channel, prefix,
			nil, nil, nil, nil).Scan(&version, &remaining)
	}))
	b.Run("floor", upserts(func(k, data []byte) error {
		var version int64
		return testDB.pool.QueryRow(ctx, floor, k, data, lifetime, channel, prefix).Scan(&version)
	}))
}
