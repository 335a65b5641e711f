package main

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// Every benchmark runs one sub-benchmark per payload and store kind, named
// payload=<size>/store=<kind>, on its own table and session, so that one
// `go test -bench .` puts the stores side by side. See README.md.

// forEachStore runs fn as one sub-benchmark per payload and store kind
// (only the kinds that have the operation, when gets). It fails at once
// when no database or Redis answers, before any row runs.
func forEachStore(b *testing.B, gets bool, fn func(b *testing.B, f *fixture)) {
	mustEnv(b)
	for _, p := range payloads {
		for _, k := range storeKinds {
			if gets && k.saves {
				continue
			}
			b.Run("payload="+p.name+"/store="+k.name, func(b *testing.B) {
				b.ReportAllocs()
				fn(b, openFixture(b, k, p))
			})
		}
	}
}

// cpuMeter measures the CPU time the whole process (GC and all threads
// included) spends per op. On a shared machine, where ns/op also counts the
// time other processes held the CPU, cpu-ns/op is the steadier number for
// the rows that do not wait for the database.
type cpuMeter struct {
	start time.Duration
	ok    bool
}

// startCPU starts a cpuMeter; call it right before the measured loop.
func startCPU() cpuMeter {
	start, ok := processCPU()
	return cpuMeter{start, ok}
}

// report adds the cpu-ns/op metric to b, whose b.N is final.
func (m cpuMeter) report(b *testing.B) {
	end, ok := processCPU()
	if m.ok && ok && b.N > 0 {
		b.ReportMetric(float64(end-m.start)/float64(b.N), "cpu-ns/op")
	}
}

// benchOp benchmarks one operation of one client.
func benchOp(b *testing.B, f *fixture, do func(*client) error) {
	c := newTestClient(b, f)
	if err := do(c); err != nil { // warm: connection, statement cache
		b.Fatal(err)
	}
	cpu := startCPU()
	for b.Loop() {
		if err := do(c); err != nil {
			b.Fatal(err)
		}
	}
	cpu.report(b)
}

// BenchmarkGet is one request reading its session: a fresh *http.Request
// carrying the cookie, store.Get, the values read.
func BenchmarkGet(b *testing.B) {
	forEachStore(b, true, func(b *testing.B, f *fixture) { benchOp(b, f, (*client).get) })
}

// BenchmarkGetParallel is BenchmarkGet from GOMAXPROCS goroutines at once,
// each a different client with its own session.
func BenchmarkGetParallel(b *testing.B) {
	forEachStore(b, true, func(b *testing.B, f *fixture) {
		clients := make([]*client, runtime.GOMAXPROCS(0))
		for i := range clients {
			clients[i] = newTestClient(b, f)
			if err := clients[i].get(); err != nil {
				b.Fatal(err)
			}
		}
		var next atomic.Int64
		cpu := startCPU()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			c := clients[int(next.Add(1)-1)%len(clients)]
			for pb.Next() {
				if err := c.get(); err != nil {
					b.Error(err)
					return
				}
			}
		})
		cpu.report(b)
	})
}

// BenchmarkSaveChanged is one request that changes its session: Get, a new
// value for the int, Save to a ResponseRecorder. For the floor rows it is
// the upsert alone, with different data each time.
func BenchmarkSaveChanged(b *testing.B) {
	forEachStore(b, false, func(b *testing.B, f *fixture) { benchOp(b, f, (*client).saveChanged) })
}

// BenchmarkSaveUnchanged is one request that saves its session without
// changing it: Get, Save. For the floor rows it is the upsert alone, with
// the same data each time.
func BenchmarkSaveUnchanged(b *testing.B) {
	forEachStore(b, false, func(b *testing.B, f *fixture) { benchOp(b, f, (*client).saveUnchanged) })
}
