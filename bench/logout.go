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

// The logout window (issue 10): after a logout on instance A returns, how
// long instance B still serves the logged-out session to a client that
// replays the cookie it had before the logout; and the same window for a
// change: how long B still serves the old values to the old cookie.
//
// Method. Two Stores, A and B, each on its own pool, one table (a fresh
// one, dropped afterwards), the default Config otherwise. Each trial logs a
// new session in on A (Save), and reads it on B twice with that cookie: a
// miss that caches it, then a hit, checked in B's Stats. Then A acts, as a
// handler would, on a fresh request carrying the cookie: Get, then
//
//   - logout: Options.MaxAge = -1 and Save (the row is deleted);
//   - change: a new counter value and Save.
//
// The instant A's Save returns, the pre-action cookie is replayed on B in a
// tight loop, store.Get with a fresh request each time, until B refuses it
// (logout: a new, empty session; change: the new counter). The window is
// the time from A's Save returning to the start of B's first refusing Get,
// 0 when the very first replay is refused; a trial counts as served when
// the first replay was served. The last served replay ended at most one
// cache-hit Get before the refusing one began, so the window is exact to
// about a microsecond. Trials alternate logout first and change first, so
// that a noisy moment does not land on one kind only.

// replayTimeout is how long a trial replays before it counts as lost.
const replayTimeout = 2 * time.Second

// The two things A does before B is asked to replay the old cookie.
const (
	actLogout = "logout"
	actChange = "change"
)

type logoutOptions struct {
	trials int
}

// logoutRow is the window after one kind of action, over every trial.
type logoutRow struct {
	Action  string
	Trials  int
	Served  int           // trials whose first replay was served (the old session, or the old values)
	Lost    int           // trials whose replays were still served replayTimeout after A's Save returned
	Window  dist          // per trial: A's Save returned -> B's first refusal began; 0 when the first replay was refused
	Open    dist          // Window over the served trials only: how long an open window stays open
	Replays int64         // replays served after A's Save returned, over all trials
	MaxRun  int           // most replays served in one trial
	Save    dist          // A's Save itself
	Total   time.Duration // wall time of the trials of this kind
}

func (r logoutRow) servedFraction() float64 {
	return float64(r.Served) / float64(max(r.Trials, 1))
}

type logoutResult struct {
	Rows []logoutRow // logout, then change
}

func (r *logoutResult) row(action string) *logoutRow {
	for i := range r.Rows {
		if r.Rows[i].Action == action {
			return &r.Rows[i]
		}
	}
	return nil
}

// replayer sends one cookie value to a Store over and over.
type replayer struct {
	store *pgsession.Store
	tmpl  *http.Request
}

func newReplayer(ctx context.Context, s *pgsession.Store, cookie string) *replayer {
	r := httptest.NewRequest(http.MethodGet, "http://example.com/", nil).WithContext(ctx)
	r.AddCookie(&http.Cookie{Name: sessionName, Value: cookie})
	return &replayer{store: s, tmpl: r}
}

// get runs Store.Get on a fresh request carrying the cookie: a shallow copy
// of the template, as the comparison does (gorilla's registry caches
// sessions per request).
func (p *replayer) get() (*sessions.Session, error) {
	r := new(http.Request)
	*r = *p.tmpl
	return p.store.Get(r, sessionName)
}

// logoutTrial is one trial of action with A as the instance that acts and
// B as the one the old cookie is replayed on.
type logoutTrial struct {
	window time.Duration // 0 when the first replay was refused
	served bool          // the first replay was served
	lost   bool
	run    int // replays served
	save   time.Duration
}

func runLogoutTrial(ctx context.Context, a, b *pgsession.Store, action string) (logoutTrial, error) {
	var t logoutTrial
	// Log in on A.
	w, err := newWriterSession(ctx, a, payloadSmall)
	if err != nil {
		return t, fmt.Errorf("login on A: %w", err)
	}
	old := w.cookie
	// B caches it: a miss loads it, the second read must be a hit.
	if err := w.readWith(ctx, b); err != nil {
		return t, fmt.Errorf("first read on B: %w", err)
	}
	h0 := b.Stats().CacheHits
	if err := w.readWith(ctx, b); err != nil {
		return t, fmt.Errorf("second read on B: %w", err)
	}
	if h := b.Stats().CacheHits - h0; h != 1 {
		return t, fmt.Errorf("second read on B: %d cache hits, want 1: is B's cache on and its listener up?", h)
	}

	// A's handler: Get with the cookie, then log out or change, and Save.
	r := httptest.NewRequest(http.MethodGet, "http://example.com/", nil).WithContext(ctx)
	r.AddCookie(&http.Cookie{Name: sessionName, Value: old})
	sess, err := a.Get(r, sessionName)
	if err != nil {
		return t, fmt.Errorf("get on A: %w", err)
	}
	if sess.IsNew {
		return t, errors.New("get on A: the session is gone")
	}
	next := w.n + 1
	switch action {
	case actLogout:
		sess.Options.MaxAge = -1
	case actChange:
		sess.Values[keyCounter] = next
	default:
		return t, fmt.Errorf("no action %q", action)
	}
	rep := newReplayer(ctx, b, old)
	rec := httptest.NewRecorder()
	t0 := time.Now()
	if err := a.Save(r, rec, sess); err != nil {
		return t, fmt.Errorf("%s on A: %w", action, err)
	}
	t1 := time.Now()
	t.save = t1.Sub(t0)

	// Replay the old cookie on B until B refuses it.
	deadline := t1.Add(replayTimeout)
	for {
		start := time.Now()
		s, err := rep.get()
		if err != nil {
			return t, fmt.Errorf("replay on B: %w", err)
		}
		var refused bool
		switch action {
		case actLogout:
			refused = s.IsNew
		case actChange:
			if s.IsNew {
				return t, errors.New("replay on B after a change: the session is gone")
			}
			switch s.Values[keyCounter] {
			case next:
				refused = true
			case w.n:
			default:
				return t, fmt.Errorf("replay on B after a change: counter %v, want %d or %d", s.Values[keyCounter], w.n, next)
			}
		}
		if refused {
			if t.run > 0 {
				t.window = start.Sub(t1)
			}
			return t, nil
		}
		t.run++
		t.served = true
		if start.After(deadline) {
			t.lost = true
			t.window = start.Sub(t1)
			return t, nil
		}
	}
}

// runLogout measures the logout and change windows between two instances
// on separate pools.
func runLogout(ctx context.Context, e *env, o logoutOptions, pr progress) (_ *logoutResult, err error) {
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
	table := uniqueName("logout")
	a, _, err := newPgsession(ctx, e, poolA, pgsession.Config{Table: table})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, e.dropTable(table)) }()
	defer a.Close()
	b, _, err := newPgsession(ctx, e, poolB, pgsession.Config{Table: table})
	if err != nil {
		return nil, err
	}
	defer b.Close()

	pr.printf("logout: %d trials of each action, logout or change on A, the old cookie replayed on B", o.trials)
	actions := []string{actLogout, actChange}
	trials := map[string][]logoutTrial{}
	took := map[string]time.Duration{}
	for i := range o.trials {
		for j := range actions {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			act := actions[(i+j)%len(actions)] // alternate which goes first
			t0 := time.Now()
			t, err := runLogoutTrial(ctx, a, b, act)
			if err != nil {
				return nil, fmt.Errorf("trial %d, %s: %w", i, act, err)
			}
			took[act] += time.Since(t0)
			trials[act] = append(trials[act], t)
		}
	}
	res := &logoutResult{}
	for _, act := range actions {
		row := logoutRow{Action: act, Trials: len(trials[act]), Total: took[act]}
		var window, open, save []time.Duration
		for _, t := range trials[act] {
			window = append(window, t.window)
			save = append(save, t.save)
			if t.served {
				row.Served++
				open = append(open, t.window)
			}
			if t.lost {
				row.Lost++
			}
			row.Replays += int64(t.run)
			row.MaxRun = max(row.MaxRun, t.run)
		}
		row.Window, row.Open, row.Save = summarize(window), summarize(open), summarize(save)
		res.Rows = append(res.Rows, row)
		pr.printf("logout: after a %s on A, the old cookie was served on B in %d of %d trials (%.1f%%), %d lost; window p50 %s, p99 %s, max %s; open windows p50 %s; A's Save p50 %s",
			act, row.Served, row.Trials, 100*row.servedFraction(), row.Lost,
			fmtMicros(row.Window.P50), fmtMicros(row.Window.P99), fmtMicros(row.Window.Max), fmtMicros(row.Open.P50), fmtMicros(row.Save.P50))
	}
	return res, nil
}

// fmtMicros formats a duration in whole microseconds, at any size.
func fmtMicros(d time.Duration) string {
	return fmt.Sprintf("%d µs", d.Microseconds())
}
