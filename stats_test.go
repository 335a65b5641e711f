package pgsession_test

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
)

// TestStatsJSON: a dashboard reads the state as text and the downtime as
// seconds, with every other field under its own name.
func TestStatsJSON(t *testing.T) {
	t.Parallel()
	b, err := json.Marshal(pgsession.Stats{
		CacheHits:        3,
		Listener:         pgsession.ListenerUp,
		ListenerDowntime: 1500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got["Listener"] != "up" || got["ListenerDowntime"] != 1.5 || got["CacheHits"] != 3.0 {
		t.Fatalf("JSON %s", b)
	}
	var back pgsession.Stats
	if err := json.Unmarshal(b, &back); err != nil || back.Listener != pgsession.ListenerUp ||
		back.ListenerDowntime != 1500*time.Millisecond || back.CacheHits != 3 {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	if n := reflect.TypeFor[pgsession.Stats]().NumField(); len(got) != n {
		t.Fatalf("JSON has %d keys, want all %d fields: %s", len(got), n, b)
	}
}
