package pgsession_test

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/sessions"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgsession/pgsession"
)

func TestNewRejectsInvalidConfig(t *testing.T) {
	t.Parallel()
	good := func() pgsession.Config { return pgsession.Config{KeyPairs: [][]byte{hashKey}} }
	tests := []struct {
		name   string
		modify func(*pgsession.Config)
	}{
		{"no keys", func(c *pgsession.Config) { c.KeyPairs = nil }},
		{"short hash key", func(c *pgsession.Config) { c.KeyPairs = [][]byte{[]byte("secret")} }},
		{"short rotated hash key", func(c *pgsession.Config) { c.KeyPairs = [][]byte{hashKey, nil, []byte("old")} }},
		{"bad block key", func(c *pgsession.Config) { c.KeyPairs = [][]byte{hashKey, []byte("0123456789")} }},
		{"table too long", func(c *pgsession.Config) { c.Table = strings.Repeat("t", 64) }},
		{"schema too long", func(c *pgsession.Config) { c.Schema = strings.Repeat("s", 64) }},
		{"NUL in table", func(c *pgsession.Config) { c.Table = "a\x00b" }},
		{"invalid UTF-8 in table", func(c *pgsession.Config) { c.Table = "a\xffb" }},
		{"negative MaxLength", func(c *pgsession.Config) { c.MaxLength = -1 }},
		{"sub-second BrowserSessionTTL", func(c *pgsession.Config) { c.BrowserSessionTTL = time.Millisecond }},
		// A default MaxAge < 0 made every Save a delete: nothing was ever stored.
		{"negative Cookie MaxAge", func(c *pgsession.Config) { c.Cookie = &sessions.Options{MaxAge: -1} }},
		// 300 years: MaxAge * time.Second overflows time.Duration.
		{"Cookie MaxAge overflows", func(c *pgsession.Config) { c.Cookie = &sessions.Options{MaxAge: 300 * 365 * 24 * 3600} }},
		{"Cookie MaxAge one past the bound", func(c *pgsession.Config) {
			c.Cookie = &sessions.Options{MaxAge: int(math.MaxInt64/int64(time.Second)) + 1}
		}},
		{"1 ns ScavengeInterval", func(c *pgsession.Config) { c.ScavengeInterval = time.Nanosecond }},
		{"9 ms ScavengeInterval", func(c *pgsession.Config) { c.ScavengeInterval = 9 * time.Millisecond }},
		{"1 ns PurgeInterval", func(c *pgsession.Config) { c.PurgeInterval = time.Nanosecond }},
		{"newline in table", func(c *pgsession.Config) { c.Table = "s\nCREATE TABLE pwned(x int);--" }},
		{"escape in table", func(c *pgsession.Config) { c.Table = "a\x1bb" }},
		{"DEL in table", func(c *pgsession.Config) { c.Table = "a\x7fb" }},
		{"tab in schema", func(c *pgsession.Config) { c.Schema = "a\tb" }},
		{"carriage return in channel", func(c *pgsession.Config) { c.Channel = "pgsession:a\rb" }},
		{"negative IdleTimeout", func(c *pgsession.Config) { c.IdleTimeout = -time.Second }},
		{"negative AbsoluteTimeout", func(c *pgsession.Config) { c.AbsoluteTimeout = -time.Second }},
		{"negative MaxStale", func(c *pgsession.Config) { c.MaxStale = -time.Second }},
		{"negative MaxStale under CoherenceRevocations", func(c *pgsession.Config) {
			c.Coherence, c.MaxStale = pgsession.CoherenceRevocations, -1
		}},
		{"unknown Coherence", func(c *pgsession.Config) { c.Coherence = pgsession.Coherence(7) }},
	}
	// Configuration is checked before anything touches the database, so
	// this runs without one: the pool points nowhere and is never dialed.
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good()
			tt.modify(&cfg)
			s, err := pgsession.New(context.Background(), pool, cfg)
			if !errors.Is(err, pgsession.ErrInvalidConfig) {
				t.Fatalf("New: got %v, want ErrInvalidConfig", err)
			}
			if s != nil {
				t.Fatal("New returned a store with an error")
			}
		})
	}
	// Values at the bounds pass validation: New goes on to the database,
	// which is not there.
	accepted := []struct {
		name   string
		modify func(*pgsession.Config)
	}{
		{"Cookie MaxAge 0", func(c *pgsession.Config) { c.Cookie = &sessions.Options{MaxAge: 0} }},
		{"Cookie MaxAge at the bound", func(c *pgsession.Config) {
			c.Cookie = &sessions.Options{MaxAge: int(math.MaxInt64 / int64(time.Second))}
		}},
		{"10 ms intervals", func(c *pgsession.Config) {
			c.ScavengeInterval, c.PurgeInterval = 10*time.Millisecond, 10*time.Millisecond
		}},
		{"CoherenceRevocations with 1 ns MaxStale", func(c *pgsession.Config) {
			c.Coherence, c.MaxStale = pgsession.CoherenceRevocations, time.Nanosecond
		}},
		{"negative intervals", func(c *pgsession.Config) { c.ScavengeInterval, c.PurgeInterval = -time.Nanosecond, -1 }},
		{"comment markers and non-ASCII in names", func(c *pgsession.Config) {
			c.Schema, c.Table, c.Channel = "a/*b", "sessões--x", "pgsession:é*/"
		}},
	}
	for _, tt := range accepted {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good()
			tt.modify(&cfg)
			s, err := pgsession.New(context.Background(), pool, cfg)
			if err == nil {
				s.Close()
				t.Fatal("New succeeded without a database")
			}
			if errors.Is(err, pgsession.ErrInvalidConfig) {
				t.Fatalf("New: %v, want the configuration accepted", err)
			}
		})
	}
	t.Run("nil pool", func(t *testing.T) {
		if _, err := pgsession.New(context.Background(), nil, good()); !errors.Is(err, pgsession.ErrInvalidConfig) {
			t.Fatalf("New: got %v, want ErrInvalidConfig", err)
		}
	})
}

// TestSaveRejectsOverflowingMaxAge: a session's own Options.MaxAge whose
// lifetime overflows time.Duration fails Save and Regenerate, which then
// write nothing and set no cookie. (It used to wrap around: Save returned
// nil and stored a row that had already expired.)
func TestSaveRejectsOverflowingMaxAge(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s := newStore(t, testDB.pool, cfg)
	const years300 = 300 * 365 * 24 * 3600
	sess, c := login(t, s, map[any]any{"n": 1})
	sess.Values["n"] = 2
	sess.Options.MaxAge = years300
	for name, op := range map[string]func(http.ResponseWriter) error{
		"Save":       func(w http.ResponseWriter) error { return s.Save(request(c), w, sess) },
		"Regenerate": func(w http.ResponseWriter) error { return s.Regenerate(request(c), w, sess) },
	} {
		w := httptest.NewRecorder()
		if err := op(w); !errors.Is(err, pgsession.ErrInvalidConfig) || !strings.Contains(err.Error(), "overflows") {
			t.Fatalf("%s with MaxAge %d: %v, want ErrInvalidConfig saying it overflows", name, years300, err)
		}
		if responseCookie(t, w) != nil {
			t.Fatalf("a failed %s set a cookie", name)
		}
	}
	fresh := get(t, s, nil)
	fresh.Values["n"] = 3
	fresh.Options.MaxAge = years300
	if err := s.Save(request(nil), httptest.NewRecorder(), fresh); !errors.Is(err, pgsession.ErrInvalidConfig) || fresh.ID != "" {
		t.Fatalf("Save of a new session: %v, ID %q", err, fresh.ID)
	}
	if got := get(t, newStore(t, testDB.pool, cfg), c); got.IsNew || got.Values["n"] != 1 {
		t.Fatalf("the stored session changed: new %v, values %v", got.IsNew, got.Values)
	}
	var rows int
	if err := testDB.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{cfg.Table}.Sanitize()).Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("%d rows (%v), want the one session", rows, err)
	}
}
