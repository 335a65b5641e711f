package pgsession

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"time"
)

// Touches (Config.IdleTimeout): a read of a session is activity, so it
// extends the row's expiry. Reads only schedule a touch; a goroutine of
// the store sends what is scheduled, many sessions per statement, while
// the requests go on.

// maxTouchBatch is the most sessions one touch statement extends.
const maxTouchBatch = 1000

// maxPendingTouches bounds the sessions waiting for a touch; past it a
// read schedules none (counted as failed): the database is not keeping up.
const maxPendingTouches = 100000

// toucher group-commits the touches of one Store.
type toucher struct {
	s       *Store
	mu      sync.Mutex
	pending map[keyHash]struct{}
	loaded  map[keyHash]time.Time // when loads last scheduled a touch, for the throttle without a cache entry
	wake    chan struct{}         // one wake-up is enough
}

func newToucher(s *Store) *toucher {
	return &toucher{s: s, pending: make(map[keyHash]struct{}), loaded: make(map[keyHash]time.Time), wake: make(chan struct{}, 1)}
}

// scheduleLoaded asks for a touch of k, read from the database at now,
// unless a load scheduled one within the touch interval: the throttle a
// cache entry keeps for hits, for loads (every read, with the cache off).
func (t *toucher) scheduleLoaded(k keyHash, now time.Time) {
	if t == nil {
		return
	}
	every := time.Duration(t.s.touchEvery)
	t.mu.Lock()
	last, seen := t.loaded[k]
	due := !seen || now.Sub(last) >= every
	if due {
		t.loaded[k] = now
	}
	t.mu.Unlock()
	if due {
		t.schedule(k)
	}
}

// schedule asks for a touch of k. It never blocks. A nil toucher
// (IdleTimeout off) does nothing.
func (t *toucher) schedule(k keyHash) {
	if t == nil {
		return
	}
	t.mu.Lock()
	full := len(t.pending) >= maxPendingTouches
	if !full {
		t.pending[k] = struct{}{}
	}
	t.mu.Unlock()
	if full {
		t.s.counters.touchesFailed.Add(1)
		return
	}
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// run sends the scheduled touches until ctx ends.
func (t *toucher) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.wake:
		}
		t.flush(ctx)
	}
}

// flush sends every touch scheduled so far.
func (t *toucher) flush(ctx context.Context) {
	t.mu.Lock()
	keys := make([]keyHash, 0, len(t.pending))
	for k := range t.pending {
		keys = append(keys, k)
	}
	clear(t.pending)
	// What no load can be throttled by any more.
	now := t.s.now()
	for k, at := range t.loaded {
		if now.Sub(at) >= time.Duration(t.s.touchEvery) {
			delete(t.loaded, k)
		}
	}
	t.mu.Unlock()
	slices.SortFunc(keys, func(a, b keyHash) int { return bytes.Compare(a[:], b[:]) })
	for len(keys) > 0 && ctx.Err() == nil {
		n := min(len(keys), maxTouchBatch)
		t.send(ctx, keys[:n])
		keys = keys[n:]
	}
}

// send extends the rows of keys by IdleTimeout (no further than their
// absolute end), and the deadlines of their cache entries with them.
func (t *toucher) send(ctx context.Context, keys []keyHash) {
	s := t.s
	ctx, cancel := s.writeContext(ctx)
	defer cancel()
	args := make([][]byte, len(keys))
	for i := range keys {
		args[i] = keys[i][:]
	}
	start := s.now()
	s.counters.touchesSent.Add(int64(len(keys)))
	rows, err := s.pool.Query(ctx, s.sql.touch, args, s.cfg.IdleTimeout.Microseconds(), s.absoluteUS())
	if err == nil {
		for rows.Next() {
			var k []byte
			var version, remainingUS int64
			if err = rows.Scan(&k, &version, &remainingUS); err != nil {
				rows.Close()
				break
			}
			s.cache.extend(keyHash(k), version, start.Add(time.Duration(remainingUS)*time.Microsecond))
		}
		if err == nil {
			err = rows.Err()
		}
	}
	if err != nil && !s.closed.Load() { // Close cancels what is in flight: no failure
		s.counters.touchesFailed.Add(int64(len(keys)))
		s.log.Warn("pgsession: touching sessions failed; their rows may expire IdleTimeout after their last write", "sessions", len(keys), "err", err)
	}
}
