package pgsession

import (
	"strings"
	"testing"
)

func TestParsePayload(t *testing.T) {
	key := strings.Repeat("ab", 32)
	tests := []struct {
		payload string
		items   int
		ok      bool
	}{
		{"1 origin " + key + ":5", 1, true},
		{"1 origin " + key + ":0 " + key + ":7", 2, true},
		{"", 0, false},
		{"1 origin", 0, false},
		{"2 origin " + key + ":5", 0, false},
		{"1 origin " + key, 0, false},
		{"1 origin " + key + ":-1", 0, false},
		{"1 origin " + key + ":x", 0, false},
		{"1 origin " + key[:62] + ":1", 0, false},
		{"1 origin " + strings.Repeat("zz", 32) + ":1", 0, false},
		{"1 origin " + key + ":99999999999999999999", 0, false},
	}
	for _, tt := range tests {
		_, items, err := parsePayload(tt.payload)
		if (err == nil) != tt.ok || len(items) != tt.items {
			t.Errorf("parsePayload(%q) = %d items, %v; want %d, ok %v", tt.payload, len(items), err, tt.items, tt.ok)
		}
	}
}

func TestPayloadsSplitBelowLimit(t *testing.T) {
	items := make([]invalidation, 500)
	for i := range items {
		items[i].key[0], items[i].key[1] = byte(i), byte(i>>8)
		items[i].version = int64(i + 1)
	}
	ps := payloads("0123456789abcdef", items)
	if len(ps) < 2 {
		t.Fatalf("500 items in %d payloads, want a split", len(ps))
	}
	total := 0
	for _, p := range ps {
		if len(p) > maxPayload {
			t.Fatalf("payload of %d bytes", len(p))
		}
		_, got, err := parsePayload(p)
		if err != nil {
			t.Fatal(err)
		}
		total += len(got)
	}
	if total != len(items) {
		t.Fatalf("%d items after the split, want %d", total, len(items))
	}
}

func FuzzParsePayload(f *testing.F) {
	key := strings.Repeat("0f", 32)
	f.Add("1 0123456789abcdef " + key + ":1")
	f.Add("1 0123456789abcdef " + key + ":0 " + key + ":42")
	f.Add("1  " + key + "::")
	f.Add("garbage")
	f.Fuzz(func(t *testing.T, p string) {
		origin, items, err := parsePayload(p)
		if err != nil {
			return
		}
		// What parses renders back to something that parses the same.
		var back []invalidation
		for _, q := range payloads(origin, items) {
			if len(q) > maxPayload {
				t.Fatalf("payload of %d bytes", len(q))
			}
			o2, items2, err := parsePayload(q)
			if err != nil || o2 != origin {
				t.Fatalf("re-rendered payload %q does not parse: %v", q, err)
			}
			back = append(back, items2...)
		}
		if len(back) != len(items) {
			t.Fatalf("%d items back, want %d", len(back), len(items))
		}
		for i, it := range back {
			if it != items[i] {
				t.Fatalf("item %d: %v, want %v", i, it, items[i])
			}
		}
	})
}
