package pgsession

import (
	"strings"
	"testing"
	"unsafe"
)

// An entry gained a field (filled) for MaxStale without growing: its bools
// share a word. entryOverhead counts on this size.
func TestEntrySize(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("sizes are for 64-bit platforms")
	}
	if got := unsafe.Sizeof(entry{}); got != 80 {
		t.Fatalf("entry is %d bytes, want 80: keep the bools together at its end (with golang-lru's list element around it, 144 bytes, a size class)", got)
	}
}

// Under CoherenceRevocations (quiet), a write of data sends no
// notification; every statement that logs out still does, the same
// statement as under CoherenceAll.
func TestQuietStatements(t *testing.T) {
	for _, users := range []bool{false, true} {
		loud := newQueries("", "t", writeShape{users: users})
		quiet := newQueries("", "t", writeShape{users: users, quiet: true})
		for name, q := range map[string]string{"upsert": quiet.upsert, "upsertSkip": quiet.upsertSkip} {
			if strings.Contains(q, "pg_notify") {
				t.Errorf("users %v: quiet %s notifies:\n%s", users, name, q)
			}
		}
		if n := strings.Count(quiet.batch, "pg_notify"); n != 1 || !strings.Contains(quiet.batch, "FROM ts) d) x") {
			t.Errorf("users %v: quiet batch should notify its tombstones (ts) only:\n%s", users, quiet.batch)
		}
		same := map[string][2]string{
			"delete":       {loud.delete, quiet.delete},
			"deleteSkip":   {loud.deleteSkip, quiet.deleteSkip},
			"clear":        {loud.clear, quiet.clear},
			"clearWait":    {loud.clearWait, quiet.clearWait},
			"revoke":       {loud.revoke, quiet.revoke},
			"logoutUser":   {loud.logoutUser, quiet.logoutUser},
			"logoutOthers": {loud.logoutOthers, quiet.logoutOthers},
			"refresh":      {loud.refresh, quiet.refresh},
			"touch":        {loud.touch, quiet.touch},
		}
		for name, q := range same {
			if q[0] != q[1] {
				t.Errorf("users %v: %s differs between the modes", users, name)
			}
		}
		for _, name := range []string{"delete", "deleteSkip", "clear", "revoke", "logoutUser", "logoutOthers"} {
			if !strings.Contains(same[name][1], "pg_notify") {
				t.Errorf("users %v: quiet %s does not notify", users, name)
			}
		}
	}
}
