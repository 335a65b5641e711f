package pgsession

import (
	"context"
	"time"
)

// scavenger evicts cache entries that went unused for longer than MaxIdle:
// the session stays valid in the database and is loaded again when next
// read.
type scavenger struct {
	s        *Store
	interval time.Duration
}

func (sc *scavenger) run(ctx context.Context) {
	t := time.NewTicker(sc.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			sc.s.scavenge()
		}
	}
}

// scavenge runs one pass: it evicts the entries unused for longer than
// MaxIdle, and expired ones, from the least recently used end.
func (s *Store) scavenge() int {
	now := s.now()
	n := s.cache.scavenge(now.Add(-s.cfg.MaxIdle), now)
	s.counters.scavenged.Add(int64(n))
	s.counters.scavengeRuns.Add(1)
	return n
}
