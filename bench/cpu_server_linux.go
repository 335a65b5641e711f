//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of /proc/<pid>/stat's CPU times (USER_HZ, 100 on
// every Linux the suite is meant for).
const clockTick = 10 * time.Millisecond

// serverCPU returns the CPU time, user and system, used so far by the
// processes named postgres that this machine shows: the database's share
// of the work when it runs here. It reports false when there are none (a
// database on another host), and then the report leaves the number out.
// Backends that exited between two readings take their time with them, so
// compare readings over spans in which the connections stay open.
func serverCPU() (time.Duration, bool) {
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return 0, false
	}
	var ticks int64
	found := false
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open || s[open+1:end] != "postgres" {
			continue
		}
		// Fields after the command: state is field 3; utime and stime are
		// fields 14 and 15.
		fields := strings.Fields(s[end+1:])
		if len(fields) < 13 {
			continue
		}
		u, err1 := strconv.ParseInt(fields[11], 10, 64)
		st, err2 := strconv.ParseInt(fields[12], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		ticks += u + st
		found = true
	}
	return time.Duration(ticks) * clockTick, found
}
