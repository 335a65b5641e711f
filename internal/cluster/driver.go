package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/pgsession/pgsession"
)

// Workload says how to drive the instances.
type Workload struct {
	Clients  int           // concurrent simulated users
	Duration time.Duration // how long they keep going
	// Window is the delivery window: how long after an acknowledged write
	// (or logout) a client holding an old cookie may still see the older
	// state on another instance. A client's own newest cookie must never
	// see older data, whatever the window.
	Window time.Duration
}

// Report is what a drive found.
type Report struct {
	Instances []InstanceReport
	Ops       int64 // requests made
	Errors    int64 // requests that failed unexpectedly
	Lost      int64 // sessions found logged out that nobody logged out
}

// InstanceReport is one instance's line of the report.
type InstanceReport struct {
	Addr          string
	Store         pgsession.Stats // everything the instance counted
	Requests      int64           // requests the instance served
	CacheHits     int64
	DBReads       int64 // SELECTs for cache misses
	Notifications int64 // invalidation notifications received (own echoes included)
	Stale         int64 // reads it served older than they had to be
}

// Stale is the total number of stale reads.
func (r Report) Stale() int64 {
	var n int64
	for _, i := range r.Instances {
		n += i.Stale
	}
	return n
}

// OK reports whether the drive saw no inconsistency.
func (r Report) OK() bool { return r.Stale() == 0 && r.Errors == 0 && r.Lost == 0 }

// Print writes the report as a table.
func (r Report) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "instance\trequests\tcache hits\tdb reads\tnotifications\tstale reads\t")
	for i, in := range r.Instances {
		fmt.Fprintf(tw, "%d (%s)\t%d\t%d\t%d\t%d\t%d\t\n", i+1, in.Addr, in.Requests, in.CacheHits, in.DBReads, in.Notifications, in.Stale)
	}
	tw.Flush()
	fmt.Fprintf(w, "client requests: %d, unexpected errors: %d, sessions lost: %d, stale reads: %d\n", r.Ops, r.Errors, r.Lost, r.Stale())
}

// Drive runs the workload against the instances at addrs.
func Drive(ctx context.Context, addrs []string, wl Workload) (Report, error) {
	d := &driver{
		addrs:  addrs,
		wl:     wl,
		stale:  make([]atomic.Int64, len(addrs)),
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: wl.Clients}, Timeout: 30 * time.Second},
	}
	defer d.client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, wl.Duration)
	defer cancel()
	var wg sync.WaitGroup
	for range wl.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.user(ctx)
		}()
	}
	wg.Wait()

	rep := Report{Ops: d.ops.Load(), Errors: d.errors.Load(), Lost: d.lost.Load()}
	for i, addr := range addrs {
		var st InstanceStats
		if err := d.getJSON("http://"+addr+"/stats", &st); err != nil {
			return rep, fmt.Errorf("stats of %s: %w", addr, err)
		}
		rep.Instances = append(rep.Instances, InstanceReport{
			Addr:          addr,
			Requests:      st.Requests,
			CacheHits:     st.Store.CacheHits,
			DBReads:       st.Store.Loads,
			Notifications: st.Store.Notifications,
			Stale:         d.stale[i].Load(),
			Store:         st.Store,
		})
	}
	return rep, nil
}

type driver struct {
	addrs             []string
	wl                Workload
	client            *http.Client
	ops, errors, lost atomic.Int64
	stale             []atomic.Int64 // by instance
}

func (d *driver) getJSON(u string, v any) error {
	resp, err := d.client.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// ack is an acknowledged write of n.
type ack struct {
	at time.Time
	n  int
}

// user is one simulated user: logs in, changes its counter, reads it back
// everywhere with its newest cookie (must never go back) and with the
// cookie it got at login (must catch up within the window), logs out (then
// no instance may serve the session once the window has passed), and
// starts over.
func (d *driver) user(ctx context.Context) {
	for ctx.Err() == nil {
		cookie, ok := d.do(ctx, rand.IntN(len(d.addrs)), "POST", "/login?user=u"+strconv.Itoa(rand.IntN(1e6)), nil, nil)
		if !ok || cookie == nil {
			continue
		}
		spy := cookie // the login cookie: carries version 1 forever
		acks := []ack{{time.Now(), 0}}
		n := 0
		for ctx.Err() == nil {
			inst := rand.IntN(len(d.addrs))
			r := rand.IntN(100)
			if r >= 98 { // log out, on any instance
				if _, ok := d.do(ctx, inst, "POST", "/logout", cookie, nil); ok {
					d.checkLogout(ctx, spy, time.Now())
					break // and log in again as a new session
				}
				continue
			}
			if r < 30 { // change the counter
				n++
				var rep Reply
				if c, ok := d.do(ctx, inst, "POST", "/set?n="+strconv.Itoa(n), cookie, &rep); ok {
					acks = append(acks, ack{time.Now(), n})
					cookie = c
				}
				continue
			}
			// Read with the newest cookie: never older than the last write.
			// Read with the login cookie: older only within the window.
			use, newest := spy, r < 60
			if newest {
				use = cookie
			}
			start := time.Now()
			var rep Reply
			if _, ok := d.do(ctx, inst, "GET", "/get", use, &rep); !ok {
				continue
			}
			floor := acks[len(acks)-1].n
			if !newest {
				floor = 0
				settled := start.Add(-d.wl.Window)
				for _, a := range acks {
					if !a.at.After(settled) {
						floor = a.n
					}
				}
			}
			switch {
			case !rep.LoggedIn:
				d.lost.Add(1)
			case rep.N < floor:
				d.stale[inst].Add(1)
			}
		}
	}
}

// checkLogout waits out the delivery window after a logout acknowledged at
// at, then checks that no instance still serves the session to the cookie
// it had at login.
func (d *driver) checkLogout(ctx context.Context, spy *http.Cookie, at time.Time) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(time.Until(at.Add(d.wl.Window))):
	}
	for inst := range d.addrs {
		var rep Reply
		if _, ok := d.do(ctx, inst, "GET", "/get", spy, &rep); ok && rep.LoggedIn {
			d.stale[inst].Add(1) // logged out everywhere by now
		}
	}
}

// do makes one request to instance inst with cookie, decodes the reply
// into rep, and returns the session cookie the reply set (or the one sent,
// if none). ok is false for a failed request, counted unless the drive was
// ending.
func (d *driver) do(ctx context.Context, inst int, method, path string, cookie *http.Cookie, rep *Reply) (*http.Cookie, bool) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+d.addrs[inst]+path, nil)
	if err != nil {
		d.errors.Add(1)
		return cookie, false
	}
	if cookie != nil {
		req.AddCookie(cookie)
	}
	d.ops.Add(1)
	resp, err := d.client.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			d.errors.Add(1)
		}
		return cookie, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		if ctx.Err() == nil {
			d.errors.Add(1)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		return cookie, false
	}
	if rep != nil {
		if err := json.NewDecoder(resp.Body).Decode(rep); err != nil {
			d.errors.Add(1)
			return cookie, false
		}
	}
	for _, c := range resp.Cookies() {
		if c.Name == cookieName {
			return &http.Cookie{Name: c.Name, Value: c.Value}, true
		}
	}
	return cookie, true
}
