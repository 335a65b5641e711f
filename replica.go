package pgsession

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Reads from a replica (Config.ReadPool).
//
// A cache miss may read a physical streaming standby instead of the
// primary. Two things could make its answer wrong, and each sends the read
// to the primary instead:
//
//   - The client has seen more than the standby has replayed: a row older
//     than the cookie's version, or no row at all for a cookie that has a
//     version (a login, or a refresh of the expiry, not replayed yet).
//     The cookie tells; see Store.readReplica.
//   - This instance heard that the session changed or was logged out (or
//     dropped its whole cache: Clear, a reconnect of the listener, a
//     hand-off overflow; or started, deaf to what came before), and the
//     standby has not replayed that commit yet.
//     The cookie cannot tell: a logged-out client still holds its old
//     cookie, and the lagging standby still holds the live row, which the
//     cache would then keep. WAL positions tell, as follows.
//
// Every invalidation heard is recorded in the current batch. The sampler
// closes the batch, and only then asks the primary for its WAL insert
// position: the invalidation's commit happened before it was heard, so
// before the batch was closed, so before the position was read, and the
// position is at or past the commit's WAL. The batch's invalidations
// require that position. A standby's answer for k is trusted only when
// its replay position, read before the answer's snapshot was taken, is at
// or past what k's last invalidation, and the last whole-cache drop,
// require; an invalidation whose batch was not sampled yet is never
// trusted. Batches are a logical clock: an invalidation and a sample can
// never tie, as two readings of a coarse clock can.
//
// Under CoherenceRevocations saves are not notified, so the guard never
// hears of them: a live row it trusts may still predate a save made on
// another instance. MaxStale then counts its age not from the read but
// from when the standby's data was known current: the sampler keeps a
// short history of (cache-clock time read just before the query, WAL
// insert position) pairs, and a standby that had replayed up to position R
// holds every commit made before the time of the newest sample at or below
// R (the commit's WAL lies before that sample's position, as above). The
// entry is filled as of that time; a row with no such sample, or whose
// time is already MaxStale old, is read from the primary instead. The
// sample times are read from Config.Clock, the cache's own clock, so the
// entries' ages and the samples' are measured alike (with an injected
// clock, advancing it ages both); the ticker's real time only paces the
// samples.
//
// Memory is bounded: a requirement at or below the highest replay position
// seen is forgotten into floor, which every trusted answer must reach (a
// standby does not replay backwards; one that restarted and does, or a
// second standby behind the same pool, is sent to the primary until it
// catches up). Past maxRememberedKeys, the keys are forgotten into one
// invalidation of everything.

// DefaultReplicaSampleInterval is how often a store with a ReadPool reads
// the primary's WAL insert position. A live row read from the standby is
// used only once the standby has replayed past a position sampled after
// the last invalidation of that session (or of everything) this store
// heard: so after a session changes, its misses here read the primary for
// up to this interval plus the standby's lag.
const DefaultReplicaSampleInterval = 250 * time.Millisecond

// replicaReadTimeout bounds a read of the ReadPool: a standby that hangs
// is read around (Stats.ReplicaErrors) rather than holding up every miss
// until the request's own deadline. A one-row read by primary key takes
// milliseconds.
const replicaReadTimeout = time.Second

// After a failed read of the ReadPool, misses read the primary for
// replicaSkipMin, doubling with each failure in a row up to replicaSkipMax.
const (
	replicaSkipMin = time.Second
	replicaSkipMax = 30 * time.Second
)

// skipping reports whether misses read around the ReadPool now, after a
// failure.
func (r *replica) skipping() bool {
	until := r.skipUntil.Load()
	return until != 0 && monoNow() < until
}

// monoStart is the origin of monoNow.
var monoStart = time.Now()

// monoNow is the monotonic time, in ns since monoStart: a step of the
// wall clock does not lengthen or shorten a skip.
func monoNow() int64 { return int64(time.Since(monoStart)) }

// sampleHistory is how many WAL samples a replica guard keeps to date a
// standby's rows. Past the newest one they are kept at least
// MaxStale/(sampleHistory/2) apart, so that they span about twice
// MaxStale whatever the sampling interval; a standby's row is then dated
// at most that spacing earlier than it could be (about 1 s at the default
// 30 s), which only makes its copy re-validate sooner.
const sampleHistory = 64

// walSample is a sample of the primary's WAL insert position.
type walSample struct {
	at  int64  // cache-clock ns, read before the position was
	lsn uint64 // the position: every commit made before at lies below it
}

// maxRememberedKeys bounds the invalidated keys a replica guard remembers
// (about 100 bytes each).
const maxRememberedKeys = 16384

// replica guards and counts the reads of a store's ReadPool.
type replica struct {
	pool     *pgxpool.Pool // the standby; the caller's
	primary  *pgxpool.Pool // the store's pool, sampled for its WAL position
	interval time.Duration
	log      *slog.Logger
	counters *counters
	pageSize uint64 // wal_block_size of the primary; 0 until the sampler read it
	segSize  uint64 // wal_segment_size of the primary

	samples    atomic.Int64 // successful samples (tests)
	inOutage   atomic.Bool  // a read error was logged and no read has succeeded since
	skipUntil  atomic.Int64 // monoNow until which misses do not try the ReadPool (after a failure)
	skipFor    atomic.Int64 // how long the next failure skips it: doubles up to replicaSkipMax
	sampleFail atomic.Bool  // a sampling error was logged and no sample has succeeded since

	warnedIsolation atomic.Bool // the ReadPool was found not read committed, and it was logged

	clock   func() int64 // the cache clock now: Config.Clock through cache.at
	spacing int64        // cache-clock ns the samples in history are kept apart, but for the newest

	mu         sync.Mutex         // protects everything below
	batch      uint64             // the open batch: invalidations heard now go in it
	pending    map[keyHash]uint64 // invalidated keys whose batch was not sampled yet, and their batch
	required   map[keyHash]uint64 // invalidated keys, and the WAL position a standby must have replayed for them
	allPending bool               // everything was invalidated in batch allBatch, not sampled yet
	allBatch   uint64             // see allPending
	allLSN     uint64             // the WAL position everything requires (a sampled drop)
	floor      uint64             // what every trusted answer must have replayed: forgotten requirements
	replayed   uint64             // the highest replay position a standby reported
	history    []walSample        // recent samples, oldest first, at most sampleHistory
}

// newReplica returns the guard of cfg.ReadPool, watching c, or nil when
// there is no ReadPool.
func newReplica(cfg Config, primary *pgxpool.Pool, c *cache, counters *counters) *replica {
	if cfg.ReadPool == nil {
		return nil
	}
	r := &replica{
		pool:     cfg.ReadPool,
		primary:  primary,
		interval: cmp.Or(cfg.knobs.replicaSample, DefaultReplicaSampleInterval),
		log:      cfg.Logger,
		counters: counters,
		pending:  make(map[keyHash]uint64),
		required: make(map[keyHash]uint64),
		spacing:  int64(cfg.MaxStale) / (sampleHistory / 2),
		history:  make([]walSample, 0, sampleHistory),
		// The cache starts empty, but other instances logged sessions
		// out before this one listened: nothing the standby says is
		// trusted before it replayed what the primary had at start.
		allPending: true,
	}
	clock := cfg.Clock
	if clock == nil {
		clock = time.Now
	}
	r.clock = func() int64 { return c.at(clock()) }
	c.watch = r
	return r
}

// readReplica reads k from the ReadPool for a client that has seen
// minVersion, and reports whether its answer may be used; when not, the
// caller reads the primary. err is only ever ctx's: a standby that fails
// is counted, logged once per outage, and read around.
func (s *Store) readReplica(ctx context.Context, k keyHash, minVersion int64) (row replicaRow, ok bool, err error) {
	r := s.replica
	// A listener that is not alive may have missed invalidations, which
	// the guard then does not know of.
	if r == nil || !s.cacheUsable() || r.skipping() {
		return row, false, nil
	}
	row, err = r.read(ctx, s.sql.load, k)
	if err != nil {
		if ctx.Err() != nil {
			return row, false, ctx.Err()
		}
		r.failed(err)
		return replicaRow{}, false, nil
	}
	r.succeeded()
	current := row.replayUnknown || r.trust(k, row.replay) && row.snapshotLater
	switch {
	case !s.cacheUsable():
		ok = false // the listener failed while the standby answered
	case !row.found:
		// A cookie with a version was given by a write the standby may
		// not have replayed yet, or its expiry was extended there since.
		ok = minVersion <= 0
	case row.version < minVersion:
		ok = false // the client has seen a later write
	case row.dead:
		ok = true // a logout is never undone: only a newer row could be missing
	default:
		ok = current // a logout or write heard here may be missing
		if ok && !row.replayUnknown && s.cfg.Coherence == CoherenceRevocations {
			// A save is not heard: the row is only as new as the
			// standby's replay. Too old to serve, it is read again
			// from the primary, or a lagging standby would keep
			// renewing a superseded copy past MaxStale.
			row.asOf, row.dated = r.dated(row.replay)
			ok = row.dated && s.cache.at(s.now())-row.asOf < int64(s.cfg.MaxStale)
		}
	}
	if ok {
		s.counters.replicaReads.Add(1)
	} else {
		s.counters.replicaFallbacks.Add(1)
		row = replicaRow{}
	}
	return row, ok, nil
}

// invalidated records that k was invalidated now: called by the cache
// before it applies an invalidation of k.
func (r *replica) invalidated(k keyHash) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pending)+len(r.required) >= maxRememberedKeys {
		r.forgetKeysLocked()
	}
	r.pending[k] = r.batch
}

// dropped records that everything was invalidated now: called by the
// cache before it drops everything.
func (r *replica) dropped() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dropLocked()
}

func (r *replica) dropLocked() {
	r.allPending, r.allBatch = true, r.batch
}

// forgetKeysLocked turns every remembered key into one invalidation of
// everything now, which requires at least as much as each of them: the
// pending ones are sampled no earlier than it, and the sampled ones
// required positions read before it.
func (r *replica) forgetKeysLocked() {
	for _, lsn := range r.required {
		r.allLSN = max(r.allLSN, lsn)
	}
	clear(r.required)
	clear(r.pending)
	r.dropLocked()
}

// trust reports whether a standby's live row for k, read after the
// standby had replayed up to replay, may be used: no invalidation of k or
// of everything that this store heard before now can be missing from it.
// It records replay as seen.
func (r *replica) trust(k keyHash, replay uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.replayed = max(r.replayed, replay)
	if r.allPending || replay < r.floor || replay < r.allLSN {
		return false
	}
	if _, ok := r.pending[k]; ok {
		return false
	}
	if lsn, ok := r.required[k]; ok && replay < lsn {
		return false
	}
	return true
}

// dated returns the cache-clock time as of which a standby that had
// replayed up to replay holds every commit: that of the newest sample at
// or below replay. ok is false when no sample in the history is.
func (r *replica) dated(replay uint64) (at int64, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.history) - 1; i >= 0; i-- {
		if r.history[i].lsn <= replay {
			return r.history[i].at, true
		}
	}
	return 0, false
}

// run samples the primary's WAL position every interval until ctx ends.
func (r *replica) run(ctx context.Context) {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		r.sample(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sample closes the open batch, reads the primary's WAL insert position,
// and makes it what the closed batches' invalidations require. The insert
// position, not the write position (pg_current_wal_lsn): a commit under
// synchronous_commit = off is visible, and notified, before its WAL is
// written.
func (r *replica) sample(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, max(4*r.interval, time.Second))
	defer cancel()
	if r.pageSize == 0 {
		var page, seg int64
		err := r.primary.QueryRow(ctx, `SELECT current_setting('wal_block_size')::bigint, pg_size_bytes(current_setting('wal_segment_size'))`).Scan(&page, &seg)
		if err != nil {
			r.sampleFailed(ctx, err)
			return
		}
		r.pageSize, r.segSize = uint64(page), uint64(seg)
	}
	r.mu.Lock()
	closed := r.batch
	r.batch++
	r.mu.Unlock()

	var text string
	at := r.clock() // before the query: every commit made before it lies below the position
	err := r.primary.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&text)
	var lsn uint64
	if err == nil {
		lsn, err = parseLSN(text)
	}
	if err != nil {
		// The closed batch stays pending: the next sample covers it.
		r.sampleFailed(ctx, err)
		return
	}
	lsn = r.recordEnd(lsn)
	if r.sampleFail.CompareAndSwap(true, false) {
		r.log.Info("pgsession: the primary's WAL position can be read again; replica reads resume")
	}

	r.record(closed, lsn, at)
}

// record makes lsn, read after batch closed was closed, what the
// invalidations of that batch and earlier ones require, forgets what
// every trusted answer reaches anyway, and keeps lsn, read after the cache
// clock said at, in the history.
func (r *replica) record(closed, lsn uint64, at int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.remember(walSample{at: at, lsn: lsn})
	for k, b := range r.pending {
		if b <= closed {
			delete(r.pending, k)
			r.required[k] = lsn
		}
	}
	if r.allPending && r.allBatch <= closed {
		r.allPending = false
		r.allLSN = max(r.allLSN, lsn)
	}
	for k, req := range r.required {
		if req <= r.replayed {
			r.floor = max(r.floor, req)
			delete(r.required, k)
		}
	}
	if !r.allPending && r.allLSN <= r.replayed {
		r.floor = max(r.floor, r.allLSN)
		r.allLSN = 0
	}
	r.samples.Add(1)
}

// remember adds s to the history. The newest sample is replaced while it
// is less than spacing after the one before it; past sampleHistory the
// oldest is forgotten.
func (r *replica) remember(s walSample) {
	n := len(r.history)
	switch {
	case n >= 2 && r.history[n-1].at-r.history[n-2].at < r.spacing:
		r.history[n-1] = s
	case n == sampleHistory:
		copy(r.history, r.history[1:])
		r.history[n-1] = s
	default:
		r.history = append(r.history, s)
	}
}

func (r *replica) sampleFailed(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return // Close
	}
	if r.sampleFail.CompareAndSwap(false, true) {
		r.log.Warn("pgsession: cannot read the primary's WAL position; cache misses read the primary until it can", "err", err)
	}
}

// recordEnd maps a WAL insert position to the end of the last record
// inserted. At a page boundary PostgreSQL reports the insert position past
// the next page's header, where no record can end, while a standby that
// replayed everything reports the boundary: without this, an idle primary
// whose last record filled its page would never let a standby answer.
func (r *replica) recordEnd(lsn uint64) uint64 {
	const shortHeader, longHeader = 24, 40 // SizeOfXLogShortPHD, SizeOfXLogLongPHD
	switch {
	case r.segSize > 0 && lsn%r.segSize == longHeader:
		return lsn - longHeader
	case r.pageSize > 0 && lsn%r.pageSize == shortHeader && (r.segSize == 0 || lsn%r.segSize != shortHeader):
		return lsn - shortHeader
	}
	return lsn
}

// parseLSN parses a pg_lsn in its text form, "X/Y" with X and Y in hex.
func parseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("parse pg_lsn %q: no slash", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("parse pg_lsn %q: %w", s, err)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("parse pg_lsn %q: %w", s, err)
	}
	return h<<32 | l, nil
}

// replicaRow is what a standby answered for one key.
type replicaRow struct {
	found         bool
	data          []byte
	version       int64
	dead          bool
	exp, dbNow    time.Time
	replay        uint64
	replayUnknown bool // pg_last_wal_replay_lsn() was NULL: the ReadPool is not in recovery
	snapshotLater bool // the row's snapshot was taken after replay was read (read committed)
	dated         bool // asOf is set: the row is known current only as of then (CoherenceRevocations)
	asOf          int64
}

// read reads k from the standby, with the position it had replayed before
// the row's snapshot was taken. In one statement the position would be
// read after the snapshot, and could count commits the snapshot does not
// show. So it is two statements, sent as one batch (one round trip, one
// implicit transaction): under read committed, PostgreSQL's default, the
// second takes its snapshot after the first has read the position. Under
// repeatable read (the role's default_transaction_isolation) both share a
// snapshot taken before: snapshotLater is false and the caller does not
// trust the row. (An explicit BEGIN ISOLATION LEVEL READ COMMITTED would
// cover that case too, but costs two statements more on every read:
// 80 us against 40 us a read on loopback, measured.)
func (r *replica) read(ctx context.Context, load string, k keyHash) (row replicaRow, err error) {
	ctx, cancel := context.WithTimeout(ctx, replicaReadTimeout)
	defer cancel()
	b := &pgx.Batch{}
	b.Queue(`SELECT pg_last_wal_replay_lsn()::text, current_setting('transaction_isolation')`)
	b.Queue(load, k[:])
	br := r.pool.SendBatch(ctx, b)
	defer func() {
		if cerr := br.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	var replay *string
	var isolation string
	if err := br.QueryRow().Scan(&replay, &isolation); err != nil {
		return row, err
	}
	if replay == nil {
		row.replayUnknown = true
	} else if row.replay, err = parseLSN(*replay); err != nil {
		return row, err
	}
	row.snapshotLater = isolation == "read committed"
	if !row.snapshotLater {
		r.isolationWarning(isolation)
	}
	err = br.QueryRow().Scan(&row.data, &row.version, &row.exp, &row.dbNow, &row.dead)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return row, err
	default:
		row.found = true
	}
	return row, nil
}

// isolationWarning says, once, that the ReadPool's sessions are not read
// committed, so its live rows are never trusted.
func (r *replica) isolationWarning(isolation string) {
	if r.warnedIsolation.CompareAndSwap(false, true) {
		r.log.Warn("pgsession: the ReadPool's transactions are not read committed, so a standby's snapshot may predate its replay position; "+
			"misses of live sessions read the primary. Set default_transaction_isolation to 'read committed' for the ReadPool's role",
			"transaction_isolation", isolation)
	}
}

// failed counts and logs, once per outage, a read of the standby that
// failed; the primary is read instead.
func (r *replica) failed(err error) {
	r.counters.replicaErrors.Add(1)
	// A standby that fails, or hangs until replicaReadTimeout, is not
	// tried by every miss: they read the primary for a while, longer
	// after each failure in a row.
	// Only the first failure after a skip ended doubles it: the misses in
	// flight with it fail for the same reason.
	if until, now := r.skipUntil.Load(), monoNow(); until == 0 || now >= until {
		d := min(max(time.Duration(r.skipFor.Load()), replicaSkipMin), replicaSkipMax)
		if r.skipUntil.CompareAndSwap(until, now+int64(d)) {
			r.skipFor.Store(int64(min(2*d, replicaSkipMax)))
		}
	}
	if r.inOutage.CompareAndSwap(false, true) {
		r.log.Warn("pgsession: reading the ReadPool failed; cache misses read the primary until it answers again", "err", err)
	}
}

// succeeded ends an outage of the standby, if one was logged.
func (r *replica) succeeded() {
	if r.skipFor.Load() != 0 {
		r.skipFor.Store(0)
	}
	if r.inOutage.Load() && r.inOutage.CompareAndSwap(true, false) {
		r.log.Info("pgsession: the ReadPool answers again")
	}
}
