package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgsession/pgsession"
)

// Listing a user's sessions in a big table (issue 13). A Store with
// Config.UserKey creates its table, the user index included; then one
// INSERT ... SELECT from generate_series fills it with N live rows (default
// 1,000,000), row g of user g % (N / usersPerUser), so that every user has
// usersPerUser sessions, and the table is VACUUM ANALYZEd. Then
// Store.Sessions runs for random users, one call at a time, after a
// warm-up; the report gives the calls' latency percentiles (goal: p99 under
// 5 ms at 1M rows). Every call is checked to list the user's sessions.

type usersOptions struct {
	rows  int
	calls int
}

type usersResult struct {
	Rows       int
	Users      int
	InsertTime time.Duration // the INSERT and the VACUUM ANALYZE
	TableBytes int64         // pg_total_relation_size: heap and indexes
	Calls      int
	Latency    dist // Store.Sessions, one call at a time
}

// usersPerUser is how many sessions each user has in the users scenario.
const usersPerUser = 5

// usersGoal is the target of Sessions' p99 at 1M rows.
const usersGoal = 5 * time.Millisecond

func runUsers(ctx context.Context, e *env, o usersOptions, pr progress) (_ *usersResult, err error) {
	if o.rows < usersPerUser {
		return nil, fmt.Errorf("%d rows: want at least %d", o.rows, usersPerUser)
	}
	users := o.rows / usersPerUser
	res := &usersResult{Rows: users * usersPerUser, Users: users, Calls: o.calls}
	pool, err := e.newPool(ctx, 4, nil)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	table := uniqueName("users")
	defer func() { err = errors.Join(err, e.dropTable(table)) }()
	s, _, err := newPgsession(ctx, e, pool, pgsession.Config{Table: table, UserKey: "user_id", PurgeInterval: -1})
	if err != nil {
		return nil, err
	}
	defer s.Close()

	t := pgx.Identifier{table}.Sanitize()
	pr.printf("users: inserting %d rows, %d users of %d sessions", res.Rows, users, usersPerUser)
	start := time.Now()
	if _, err := pool.Exec(ctx, `INSERT INTO `+t+` (key_hash, data, expires_at, user_id)
		SELECT sha256(convert_to(g::text, 'UTF8')), '\x'::bytea, now() + interval '1 hour', (g % $2::bigint)::text
		FROM generate_series(1::bigint, $1::bigint) g`, res.Rows, users); err != nil {
		return nil, fmt.Errorf("insert rows: %w", err)
	}
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE `+t); err != nil {
		return nil, err
	}
	res.InsertTime = time.Since(start)
	if err := pool.QueryRow(ctx, `SELECT pg_total_relation_size($1::regclass)`, t).Scan(&res.TableBytes); err != nil {
		return nil, err
	}

	rng := rand.New(rand.NewPCG(1, 13))
	call := func() (time.Duration, error) {
		u := strconv.Itoa(rng.IntN(users))
		t0 := time.Now()
		list, err := s.Sessions(ctx, u)
		d := time.Since(t0)
		if err != nil {
			return 0, err
		}
		if len(list) != usersPerUser {
			return 0, fmt.Errorf("Sessions(%q) listed %d sessions, want %d", u, len(list), usersPerUser)
		}
		return d, nil
	}
	warm := min(o.calls/10+1, 1000)
	pr.printf("users: %d warm-up calls, then %d calls of Sessions", warm, o.calls)
	for range warm {
		if _, err := call(); err != nil {
			return nil, err
		}
	}
	lat := make([]time.Duration, 0, o.calls)
	for range o.calls {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		d, err := call()
		if err != nil {
			return nil, err
		}
		lat = append(lat, d)
	}
	res.Latency = summarize(lat)
	return res, nil
}

func (r *report) mdUsers(m *md) {
	u := r.Users
	if u == nil {
		return
	}
	m.p("## Listing a user's sessions")
	m.p("A Store with `UserKey` on a table of %d live rows (%d users of %d sessions each; %s with its indexes), inserted by one `INSERT ... SELECT` from generate_series and VACUUM ANALYZEd (%s). `Store.Sessions` for random users, one call at a time, each checked to list %d sessions:",
		u.Rows, u.Users, usersPerUser, fmtBytes(float64(u.TableBytes)), u.InsertTime.Round(time.Millisecond), usersPerUser)
	m.table([]string{"calls", "mean", "p50", "p90", "p99", "max"}, [][]string{
		{fmt.Sprint(u.Latency.N), fmtDur(u.Latency.Mean), fmtDur(u.Latency.P50), fmtDur(u.Latency.P90), fmtDur(u.Latency.P99), fmtDur(u.Latency.Max)},
	})
}
