package pgsession

import (
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// TestReplicaBurstOfFailuresSkipsOnce: the misses in flight when a standby
// fails all fail together; each doubles the skip, so one burst of six
// concurrent misses skips the ReadPool for 30 s, not 1 s.
func TestReplicaBurstOfFailuresSkipsOnce(t *testing.T) {
	r := &replica{log: slog.New(slog.NewTextHandler(io.Discard, nil)), counters: &counters{}}
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() { defer wg.Done(); r.failed(errors.New("timeout")) }()
	}
	wg.Wait()
	if d := time.Duration(r.skipUntil.Load() - monoNow()); d > 2*time.Second {
		t.Fatalf("one burst of 6 concurrent failed misses (one outage event) skips the ReadPool for %v", d.Round(time.Second))
	}
}
