//go:build linux

package main

import (
	"bufio"
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
	var total time.Duration
	found := false
	for _, f := range stats {
		if d, ok := postgresCPU(f); ok {
			total += d
			found = true
		}
	}
	return total, found
}

// pidsCPU is serverCPU over the processes pids only (those still there and
// named postgres).
func pidsCPU(pids []int) (time.Duration, bool) {
	var total time.Duration
	found := false
	for _, pid := range pids {
		if d, ok := postgresCPU("/proc/" + strconv.Itoa(pid) + "/stat"); ok {
			total += d
			found = true
		}
	}
	return total, found
}

// postgresCPU reads the user and system CPU time of the process whose
// /proc stat file is path, if it is named postgres.
func postgresCPU(path string) (time.Duration, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open || s[open+1:end] != "postgres" {
		return 0, false
	}
	// Fields after the command: state is field 3; utime and stime are
	// fields 14 and 15.
	fields := strings.Fields(s[end+1:])
	if len(fields) < 13 {
		return 0, false
	}
	u, err1 := strconv.ParseInt(fields[11], 10, 64)
	st, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(u+st) * clockTick, true
}

// ownClientPorts returns the local ports of this process's TCP connections
// to remotePort: the client_port pg_stat_activity shows for the backends
// serving this process.
func ownClientPorts(remotePort int) []int {
	// The sockets this process holds, by inode.
	mine := map[string]bool{}
	fds, _ := filepath.Glob("/proc/self/fd/*")
	for _, fd := range fds {
		if l, err := os.Readlink(fd); err == nil {
			if inode, ok := strings.CutPrefix(l, "socket:["); ok {
				mine[strings.TrimSuffix(inode, "]")] = true
			}
		}
	}
	var ports []int
	for _, table := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fs := strings.Fields(sc.Text())
			if len(fs) < 10 || !mine[fs[9]] {
				continue
			}
			local, remote := hexPort(fs[1]), hexPort(fs[2])
			if remote == remotePort && local > 0 {
				ports = append(ports, local)
			}
		}
		f.Close()
	}
	return ports
}

// hexPort returns the port of a /proc/net/tcp address (hex "ADDR:PORT").
func hexPort(addr string) int {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return -1
	}
	p, err := strconv.ParseInt(addr[i+1:], 16, 32)
	if err != nil {
		return -1
	}
	return int(p)
}
