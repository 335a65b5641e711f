package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/gorilla/sessions"
	"github.com/pgsession/pgsession"
)

// Invalidation latency: how long after a write commits on one instance the
// other instance drops its copy.
//
// Method. Two Stores, A and B, on separate pools, share a table. For each
// sample, B reads a session with the newest cookie (so B caches the current
// version), then A saves a changed value, and a poller reads
// B.Stats().NotifyEvictions until it grows: B's listener applied the
// notification and evicted its copy. The commit happens somewhere inside
// A's Save, so the report gives the time from Save's return (the moment
// A's caller knows the write committed: a slight underestimate, 0 when the
// eviction came first) and from Save's call (an overestimate by the
// commit's own round trip).
//
// The poller sleeps between looks with the Go timer, so that the process
// behaves as an application would; Go rounds such sleeps up to about a
// millisecond when nothing else wakes it, so the eviction times are upper
// bounds, late by up to the reported poll period. (Spinning, or sleeping
// the thread outside the Go scheduler, gives finer looks but disturbs the
// runtime's network poller: on 2 cores both added delays of ~10 ms that a
// normal process does not see.) As a precise floor, a third, plain pgx
// connection LISTENs on the same channel and timestamps each notification
// as it arrives, with no polling: delivery to any listener cannot be
// faster than that.

// pollInterval is what the poller asks to sleep between two looks.
const pollInterval = 50 * time.Microsecond

// evictionTimeout is how long a sample waits for its eviction before it
// counts as lost.
const evictionTimeout = 2 * time.Second

type invalidationResult struct {
	FromReturn        dist          // eviction on B after A's Save returned
	FromCall          dist          // eviction on B after A's Save was called
	Save              dist          // A's Save itself
	Delivered         dist          // A's Save returned -> the notification reached a plain LISTEN connection (0 when it came first)
	DeliveredFromCall dist          // A's Save called -> the notification reached a plain LISTEN connection
	Lost              int           // samples whose eviction did not come within evictionTimeout
	Early             int           // samples whose eviction came before A's Save returned
	PollPeriod        time.Duration // mean time between two looks of the poller

	// Samples from Save's call, for the chart: eviction on B, and arrival
	// at the plain LISTEN connection.
	evictedSamples, deliveredSamples []time.Duration
}

// writerSession is a session that a Store writes directly with Save, and
// whose newest cookie another store reads with.
type writerSession struct {
	store  *pgsession.Store
	sess   *sessions.Session
	cookie string
	n      int
}

// newWriterSession saves a new session with p's values through s.
func newWriterSession(ctx context.Context, s *pgsession.Store, p payload) (*writerSession, error) {
	r := httptest.NewRequest(http.MethodGet, "http://example.com/", nil).WithContext(ctx)
	sess, err := s.New(r, sessionName)
	if err != nil {
		return nil, err
	}
	for k, v := range p.values() {
		sess.Values[k] = v
	}
	w := &writerSession{store: s, sess: sess, n: 1}
	if err := w.save(ctx); err != nil {
		return nil, err
	}
	return w, nil
}

// save writes the session as it stands and remembers the cookie.
func (w *writerSession) save(ctx context.Context) error {
	r := httptest.NewRequest(http.MethodGet, "http://example.com/", nil).WithContext(ctx)
	rec := httptest.NewRecorder()
	if err := w.store.Save(r, rec, w.sess); err != nil {
		return err
	}
	for _, c := range rec.Result().Cookies() {
		if c.Name == sessionName {
			w.cookie = c.Value
			return nil
		}
	}
	return errors.New("save set no session cookie")
}

// change saves a new counter value.
func (w *writerSession) change(ctx context.Context) error {
	w.n++
	w.sess.Values[keyCounter] = w.n
	return w.save(ctx)
}

// readWith reads the session through s with the writer's newest cookie and
// checks it sees the newest counter.
func (w *writerSession) readWith(ctx context.Context, s *pgsession.Store) error {
	r := httptest.NewRequest(http.MethodGet, "http://example.com/", nil).WithContext(ctx)
	r.AddCookie(&http.Cookie{Name: sessionName, Value: w.cookie})
	sess, err := s.Get(r, sessionName)
	if err != nil {
		return err
	}
	if sess.IsNew {
		return errors.New("read: the session is gone")
	}
	if got := sess.Values[keyCounter]; got != w.n {
		return fmt.Errorf("read: counter %v, want %d", got, w.n)
	}
	return nil
}

// evictionSamples gathers samples of the invalidation latency, over one
// or several calls of collectEvictions.
type evictionSamples struct {
	fromReturn, fromCall, save, delivered, deliveredCall []time.Duration
	lost, early                                          int
	polls                                                int64
	polled                                               time.Duration
}

// result summarizes the samples.
func (s *evictionSamples) result() invalidationResult {
	res := invalidationResult{Lost: s.lost, Early: s.early}
	res.FromReturn, res.FromCall, res.Save = summarize(s.fromReturn), summarize(s.fromCall), summarize(s.save)
	res.evictedSamples, res.deliveredSamples = s.fromCall, s.deliveredCall
	res.Delivered, res.DeliveredFromCall = summarize(s.delivered), summarize(s.deliveredCall)
	if s.polls > 0 {
		res.PollPeriod = s.polled / time.Duration(s.polls)
	}
	return res
}

// evictionTrial readies sample i: it makes sure reader holds a session in
// its cache and returns the write, on another Store, whose notification
// must evict it.
type evictionTrial func(i int) (write func() error, err error)

// collectEvictions takes samples of the invalidation latency to reader
// (cache on), each readied by trial, into s.
// arrivals, if not nil, receives the arrival time of every notification on
// the table's channel at a plain LISTEN connection.
func collectEvictions(ctx context.Context, reader *pgsession.Store, samples int, arrivals <-chan time.Time, trial evictionTrial, s *evictionSamples) error {
	for i := range samples {
		if err := ctx.Err(); err != nil {
			return err
		}
		write, err := trial(i)
		if err != nil {
			return err
		}
		before := reader.Stats()
		if before.Entries == 0 {
			return errors.New("reader cached nothing: is its cache on and its listener up?")
		}
		e0 := before.NotifyEvictions
		for len(arrivals) > 0 { // stale: the reader's own traffic, a lost sample's
			<-arrivals
		}
		t0 := time.Now()
		if err := write(); err != nil {
			return fmt.Errorf("writer: %w", err)
		}
		t1 := time.Now()
		deadline := t1.Add(evictionTimeout)
		lost, early := false, true
		for reader.Stats().NotifyEvictions == e0 {
			early = false
			if time.Now().After(deadline) {
				lost = true
				break
			}
			time.Sleep(pollInterval)
			s.polls++
		}
		t2 := time.Now()
		if early {
			s.early++
		}
		s.polled += t2.Sub(t1)
		s.save = append(s.save, t1.Sub(t0))
		if arrivals != nil {
			select {
			case ta := <-arrivals:
				s.delivered = append(s.delivered, max(ta.Sub(t1), 0))
				s.deliveredCall = append(s.deliveredCall, ta.Sub(t0))
			case <-time.After(evictionTimeout):
				lost = true
			}
		}
		if lost {
			s.lost++
			continue
		}
		s.fromReturn = append(s.fromReturn, t2.Sub(t1))
		s.fromCall = append(s.fromCall, t2.Sub(t0))
	}
	return nil
}

// changeTrial readies samples that change sessions ws (written by any
// Store: its cache may be off) after reader cached their current version.
func changeTrial(ctx context.Context, ws []*writerSession, reader *pgsession.Store) evictionTrial {
	return func(i int) (func() error, error) {
		w := ws[i%len(ws)]
		// The reader caches the current version (a miss loads it).
		if err := w.readWith(ctx, reader); err != nil {
			return nil, fmt.Errorf("reader: %w", err)
		}
		return func() error { return w.change(ctx) }, nil
	}
}

// measureEvictions takes samples of the invalidation latency from a
// change of one of ws to reader.
func measureEvictions(ctx context.Context, ws []*writerSession, reader *pgsession.Store, samples int, arrivals <-chan time.Time) (invalidationResult, error) {
	var s evictionSamples
	err := collectEvictions(ctx, reader, samples, arrivals, changeTrial(ctx, ws, reader), &s)
	return s.result(), err
}

type invalidationOptions struct {
	samples  int
	sessions int
}

// runInvalidation measures the latency between two instances on separate
// pools, the way two application processes would run.
func runInvalidation(ctx context.Context, e *env, o invalidationOptions, pr progress) (_ *invalidationResult, err error) {
	poolA, err := e.newPool(ctx, 4, nil)
	if err != nil {
		return nil, err
	}
	defer poolA.Close()
	poolB, err := e.newPool(ctx, 4, nil)
	if err != nil {
		return nil, err
	}
	defer poolB.Close()
	table := uniqueName("invalidation")
	channel := "pgsbench:" + table
	a, _, err := newPgsession(ctx, e, poolA, pgsession.Config{Table: table, Channel: channel, PurgeInterval: -1})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, e.dropTable(table)) }()
	defer a.Close()
	b, _, err := newPgsession(ctx, e, poolB, pgsession.Config{Table: table, Channel: channel, PurgeInterval: -1})
	if err != nil {
		return nil, err
	}
	defer b.Close()
	arrivals := make(chan time.Time, 64)
	stop, err := watchChannel(ctx, e, channel, arrivals)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, stop()) }()
	var ss []*writerSession
	for range o.sessions {
		w, err := newWriterSession(ctx, a, payloadSmall)
		if err != nil {
			return nil, err
		}
		ss = append(ss, w)
	}
	pr.printf("invalidation: %d samples, instance A -> instance B", o.samples)
	res, err := measureEvictions(ctx, ss, b, o.samples, arrivals)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// logout logs the session out as a handler does: Options.MaxAge = -1 and
// Save, which deletes the row (a revocation every coherence mode notifies).
func (w *writerSession) logout(ctx context.Context) error {
	r := httptest.NewRequest(http.MethodGet, "http://example.com/", nil).WithContext(ctx)
	w.sess.Options.MaxAge = -1
	return w.store.Save(r, httptest.NewRecorder(), w.sess)
}
