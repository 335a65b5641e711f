package pgsession_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pgsession/pgsession/internal/cluster"
)

// TestThreeProcesses runs three application instances as separate OS
// processes (this test binary, re-executed) on one table, and a randomized
// workload across them: no client may ever read older than it was given,
// and once a write or logout is acknowledged and the delivery window has
// passed, no instance may serve anything older.
func TestThreeProcesses(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	ps, err := cluster.Start(cluster.Config{
		Exe:         os.Args[0],
		DatabaseURL: testDB.url,
		Table:       cfg.Table,
		Key:         []byte(strings.Repeat("k", 64)),
		Stderr:      os.Stderr,
	}, 3)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cluster.Stop(ps)
		}
	})
	var addrs []string
	for _, p := range ps {
		addrs = append(addrs, p.Addr)
	}
	rep, err := cluster.Drive(context.Background(), addrs, cluster.Workload{
		Clients:  12,
		Duration: 3 * time.Second,
		Window:   time.Second, // generous: -race on two cores
	})
	stopped = true
	if serr := cluster.Stop(ps); serr != nil {
		t.Errorf("instances did not exit cleanly: %v", serr)
	}
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	rep.Print(&sb)
	t.Logf("\n%s", sb.String())
	if !rep.OK() {
		t.Fatalf("inconsistent: %d stale reads, %d lost sessions, %d errors", rep.Stale(), rep.Lost, rep.Errors)
	}
	for i, in := range rep.Instances {
		if in.Requests == 0 || in.CacheHits == 0 || in.Notifications == 0 {
			t.Errorf("instance %d took no real part: %+v", i+1, in)
		}
	}
}
