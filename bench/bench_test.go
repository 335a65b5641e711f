package bench

import (
	"encoding/binary"
	"os"
	"testing"

	"github.com/pgsession/pgsession"
)

func TestMain(m *testing.M) {
	code := m.Run()
	closeDB()
	os.Exit(code)
}

// TestSmoke runs every operation of every store once against the database,
// so that `go test ./...` proves the suite builds and measures what it
// claims. Without a database it fails.
func TestSmoke(t *testing.T) {
	dbPool(t) // fail once, clearly, before the subtests
	for _, k := range storeKinds {
		t.Run("store="+k.name, func(t *testing.T) {
			f := k.open(t)
			c := f.newClient(t)
			before := stats(f)

			if err := c.get(); err != nil {
				t.Fatal(err)
			}
			afterGet := stats(f)

			if err := c.saveChanged(); err != nil {
				t.Fatal(err)
			}
			afterChanged := stats(f)
			checkSaved(t, c)

			if err := c.saveUnchanged(); err != nil {
				t.Fatal(err)
			}
			afterUnchanged := stats(f)

			// The pgsession rows must take the paths their names promise.
			switch k.name {
			case "pgsession-cache":
				if d := afterGet.CacheHits - before.CacheHits; d != 1 || afterGet.Loads != before.Loads {
					t.Errorf("Get: %d cache hits and %d loads, want 1 hit and no load", d, afterGet.Loads-before.Loads)
				}
				if d := afterChanged.Saves - afterGet.Saves; d != 1 {
					t.Errorf("changed Save: %d database writes, want 1", d)
				}
				if d := afterUnchanged.SavesSkipped - afterChanged.SavesSkipped; d != 1 || afterUnchanged.Saves != afterChanged.Saves {
					t.Errorf("unchanged Save: %d skipped and %d written, want 1 skipped", d, afterUnchanged.Saves-afterChanged.Saves)
				}
			case "pgsession-nocache":
				if d := afterGet.Loads - before.Loads; d != 1 || afterGet.CacheHits != 0 {
					t.Errorf("Get: %d loads and %d cache hits, want 1 load", d, afterGet.CacheHits)
				}
				if d := afterUnchanged.Saves - afterChanged.Saves; d != 1 {
					t.Errorf("unchanged Save: %d database writes, want 1", d)
				}
			}
		})
	}
}

func stats(f *fixture) pgsession.Stats {
	if f.pg == nil {
		return pgsession.Stats{}
	}
	return f.pg.Stats()
}

// checkSaved checks that the changed Save stored the new counter: a client
// that sends the cookie the Save set reads it back.
func checkSaved(t *testing.T, c *client) {
	t.Helper()
	if c.f.raw != nil {
		data, err := c.rawData()
		if err != nil {
			t.Fatal(err)
		}
		if got := binary.LittleEndian.Uint64(data[len(data)-8:]); got != uint64(c.n) {
			t.Fatalf("raw row holds counter %d, want %d", got, c.n)
		}
		return
	}
	value, err := c.cookie()
	if err != nil {
		t.Fatal(err)
	}
	next := *c
	next.req = c.req.Clone(c.req.Context())
	next.req.Header.Del("Cookie")
	next.req.Header.Set("Cookie", sessionName+"="+value)
	_, s, err := next.load()
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Values[keyCounter]; got != c.n {
		t.Fatalf("after a changed Save, Get reads counter %v, want %d", got, c.n)
	}
}
