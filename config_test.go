package pgsession_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

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
	t.Run("nil pool", func(t *testing.T) {
		if _, err := pgsession.New(context.Background(), nil, good()); !errors.Is(err, pgsession.ErrInvalidConfig) {
			t.Fatalf("New: got %v, want ErrInvalidConfig", err)
		}
	})
}
