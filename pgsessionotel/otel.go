// Package pgsessionotel reports a pgsession.Store's Stats as OpenTelemetry
// metrics.
//
//	reg, err := pgsessionotel.Register(store) // the global MeterProvider
//	if err != nil {
//		return err
//	}
//	defer reg.Unregister()
//
// Register creates observable instruments on a Meter named after this
// package and registers one callback for all of them: every collection
// reads Stats once, so the values of one collection are consistent with
// each other. Counters are Int64ObservableCounters named
// pgsession.<thing>s with units such as {hit}; the cache's entries are an
// Int64ObservableUpDownCounter; the listener's state is
// pgsession.listener.status, 1 for the current pgsession.listener.state
// ("up", "down" or "off") and 0 for the others; the cluster's NOTIFY queue
// usage is pgsession.notify_queue.utilization (0 to 1).
//
// It is a module of its own so that pgsession itself does not depend on
// OpenTelemetry.
package pgsessionotel

import (
	"context"
	"errors"
	"fmt"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/pgsession/pgsession"
)

// ScopeName is the name of the Meter (the instrumentation scope) that
// Register uses.
const ScopeName = "github.com/pgsession/pgsession/pgsessionotel"

// StateKey is the attribute of pgsession.listener.status that names the
// listener state: "up", "down" or "off".
const StateKey = attribute.Key("pgsession.listener.state")

// Option configures Register.
type Option func(*config)

type config struct {
	provider metric.MeterProvider
	attrs    []attribute.KeyValue
}

// WithMeterProvider sets the MeterProvider to create the instruments with.
// Default: otel.GetMeterProvider() at the time of Register.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.provider = mp }
}

// WithAttributes adds attributes to every measurement: give each Store
// reported through one MeterProvider its own, such as
// attribute.String("pgsession.store", "admin").
func WithAttributes(attrs ...attribute.KeyValue) Option {
	return func(c *config) { c.attrs = append(c.attrs, attrs...) }
}

// kind is an instrument's type.
type kind int

const (
	intCounter kind = iota
	intUpDownCounter
	intGauge
	floatCounter
	floatGauge
)

// instrument reports one field of pgsession.Stats. Every field has one: a
// test fails for a field missing here.
type instrument struct {
	field string // the pgsession.Stats field
	name  string
	unit  string
	desc  string
	kind  kind
	i     func(pgsession.Stats) int64   // for int kinds, but the listener state's
	f     func(pgsession.Stats) float64 // for float kinds
}

// instruments maps every field of pgsession.Stats to its instrument, in the
// order of the fields.
var instruments = []instrument{
	// Reads and writes.
	{field: "CacheHits", name: "pgsession.cache.hits", unit: "{hit}", kind: intCounter,
		desc: "Gets served from the in-process cache.",
		i:    func(st pgsession.Stats) int64 { return st.CacheHits }},
	{field: "CacheMisses", name: "pgsession.cache.misses", unit: "{miss}", kind: intCounter,
		desc: "Gets of a valid cookie that the cache could not serve (absent, stale, or the listener down).",
		i:    func(st pgsession.Stats) int64 { return st.CacheMisses }},
	{field: "Loads", name: "pgsession.loads", unit: "{load}", kind: intCounter,
		desc: "SELECTs run for cache misses (concurrent misses of one session share one).",
		i:    func(st pgsession.Stats) int64 { return st.Loads }},
	{field: "Saves", name: "pgsession.saves", unit: "{save}", kind: intCounter,
		desc: "Sessions written to the database (insert or update), Regenerate included.",
		i:    func(st pgsession.Stats) int64 { return st.Saves }},
	{field: "SavesSkipped", name: "pgsession.skipped_saves", unit: "{save}", kind: intCounter,
		desc: "Saves that needed no database round trip: values and expiry unchanged.",
		i:    func(st pgsession.Stats) int64 { return st.SavesSkipped }},
	{field: "Refreshes", name: "pgsession.refreshes", unit: "{refresh}", kind: intCounter,
		desc: "Saves of unchanged values that only extended the stored expiry.",
		i:    func(st pgsession.Stats) int64 { return st.Refreshes }},
	{field: "Deletes", name: "pgsession.deletes", unit: "{delete}", kind: intCounter,
		desc: "Sessions deleted (Save with MaxAge < 0, Delete) that existed.",
		i:    func(st pgsession.Stats) int64 { return st.Deletes }},
	{field: "Revocations", name: "pgsession.revocations", unit: "{session}", kind: intCounter,
		desc: "Sessions logged out by Revoke, LogoutUser and LogoutOthers.",
		i:    func(st pgsession.Stats) int64 { return st.Revocations }},
	{field: "InvalidCookies", name: "pgsession.invalid_cookies", unit: "{cookie}", kind: intCounter,
		desc: "Cookies that failed verification (tampered, foreign key, truncated).",
		i:    func(st pgsession.Stats) int64 { return st.InvalidCookies }},
	{field: "Errors", name: "pgsession.errors", unit: "{error}", kind: intCounter,
		desc: "Operations that returned an error.",
		i:    func(st pgsession.Stats) int64 { return st.Errors }},
	{field: "Entries", name: "pgsession.cache.entry.count", unit: "{entry}", kind: intUpDownCounter,
		desc: "Sessions in the cache now.",
		i:    func(st pgsession.Stats) int64 { return st.Entries }},
	{field: "CacheBytes", name: "pgsession.cache.size", unit: "By", kind: intUpDownCounter,
		desc: "What the cached sessions count against Config.CacheBytes: their data plus about 200 bytes each.",
		i:    func(st pgsession.Stats) int64 { return st.CacheBytes }},

	// Coherence across instances.
	{field: "Notifications", name: "pgsession.notifications", unit: "{notification}", kind: intCounter,
		desc: "Invalidation notifications received, this store's own echoes and probes included.",
		i:    func(st pgsession.Stats) int64 { return st.Notifications }},
	{field: "NotifyEvictions", name: "pgsession.notify_evictions", unit: "{entry}", kind: intCounter,
		desc: "Cache entries evicted by another instance's notification.",
		i:    func(st pgsession.Stats) int64 { return st.NotifyEvictions }},
	{field: "BadNotifications", name: "pgsession.bad_notifications", unit: "{notification}", kind: intCounter,
		desc: "Malformed notifications on the channel, ignored.",
		i:    func(st pgsession.Stats) int64 { return st.BadNotifications }},
	{field: "ListenerReconnects", name: "pgsession.listener.reconnects", unit: "{reconnect}", kind: intCounter,
		desc: "Times the listener reconnected after losing its connection.",
		i:    func(st pgsession.Stats) int64 { return st.ListenerReconnects }},
	{field: "CacheDrops", name: "pgsession.cache.drops", unit: "{drop}", kind: intCounter,
		desc: "Times the whole cache was dropped (reconnect, hand-off overflow, Clear elsewhere).",
		i:    func(st pgsession.Stats) int64 { return st.CacheDrops }},
	{field: "ListenerDowntime", name: "pgsession.listener.downtime", unit: "s", kind: floatCounter,
		desc: "Total time the listener was down, the current outage included.",
		f:    func(st pgsession.Stats) float64 { return st.ListenerDowntime.Seconds() }},
	{field: "Listener", name: "pgsession.listener.status", unit: "1", kind: intGauge,
		desc: "The listener's state: 1 for the current pgsession.listener.state. The cache serves only while it is up."},
	{field: "ProbeErrors", name: "pgsession.probe_errors", unit: "{probe}", kind: intCounter,
		desc: "Probes (notifications to itself) that could not be sent.",
		i:    func(st pgsession.Stats) int64 { return st.ProbeErrors }},
	{field: "NotifyQueueUsage", name: "pgsession.notify_queue.utilization", unit: "1", kind: floatGauge,
		desc: "pg_notification_queue_usage() at the last probe: the cluster's NOTIFY queue, 0 to 1; writes fail when it is full.",
		f:    func(st pgsession.Stats) float64 { return st.NotifyQueueUsage }},
	{field: "Revalidations", name: "pgsession.revalidations", unit: "{revalidation}", kind: intCounter,
		desc: "Gets whose cached copy was older than MaxStale, so read again from the database (CoherenceRevocations).",
		i:    func(st pgsession.Stats) int64 { return st.Revalidations }},

	// Idle entries and expired rows.
	{field: "Scavenged", name: "pgsession.scavenged_entries", unit: "{entry}", kind: intCounter,
		desc: "Cache entries evicted for being idle longer than MaxIdle (or expired).",
		i:    func(st pgsession.Stats) int64 { return st.Scavenged }},
	{field: "PurgeRuns", name: "pgsession.purge.runs", unit: "{run}", kind: intCounter,
		desc: "Purge rounds this instance ran (automatic and PurgeExpired).",
		i:    func(st pgsession.Stats) int64 { return st.PurgeRuns }},
	{field: "RowsPurged", name: "pgsession.purge.rows", unit: "{row}", kind: intCounter,
		desc: "Expired rows this instance deleted.",
		i:    func(st pgsession.Stats) int64 { return st.RowsPurged }},
	{field: "PurgeSkipped", name: "pgsession.purge.skipped_runs", unit: "{run}", kind: intCounter,
		desc: "Purge rounds skipped because another instance was purging.",
		i:    func(st pgsession.Stats) int64 { return st.PurgeSkipped }},

	// Group commit.
	{field: "Batches", name: "pgsession.batches", unit: "{batch}", kind: intCounter,
		desc: "Commits that carried more than one write.",
		i:    func(st pgsession.Stats) int64 { return st.Batches }},
	{field: "BatchedWrites", name: "pgsession.batched_writes", unit: "{write}", kind: intCounter,
		desc: "Writes that went in a commit with others.",
		i:    func(st pgsession.Stats) int64 { return st.BatchedWrites }},
	{field: "BatchRetries", name: "pgsession.batch_retries", unit: "{batch}", kind: intCounter,
		desc: "Batches that failed and were retried write by write.",
		i:    func(st pgsession.Stats) int64 { return st.BatchRetries }},
	{field: "LockWaits", name: "pgsession.lock_waits", unit: "{write}", kind: intCounter,
		desc: "Writes whose row another transaction held, so they went alone and waited for it.",
		i:    func(st pgsession.Stats) int64 { return st.LockWaits }},
	{field: "TouchesSent", name: "pgsession.touches_sent", unit: "{session}", kind: intCounter,
		desc: "Sessions whose row a touch was sent to extend, for reads of them (IdleTimeout).",
		i:    func(st pgsession.Stats) int64 { return st.TouchesSent }},
	{field: "TouchesFailed", name: "pgsession.touches_failed", unit: "{session}", kind: intCounter,
		desc: "Sessions whose touch failed or could not be scheduled (IdleTimeout).",
		i:    func(st pgsession.Stats) int64 { return st.TouchesFailed }},

	// Reads from a replica (Config.ReadPool).
	{field: "ReplicaReads", name: "pgsession.replica.reads", unit: "{load}", kind: intCounter,
		desc: "Loads answered by the ReadPool (a streaming standby).",
		i:    func(st pgsession.Stats) int64 { return st.ReplicaReads }},
	{field: "ReplicaFallbacks", name: "pgsession.replica.fallbacks", unit: "{load}", kind: intCounter,
		desc: "Loads the ReadPool answered too stale to use (replication lag), then read from the primary.",
		i:    func(st pgsession.Stats) int64 { return st.ReplicaFallbacks }},
	{field: "ReplicaErrors", name: "pgsession.replica.errors", unit: "{load}", kind: intCounter,
		desc: "Loads whose read of the ReadPool failed, then read from the primary.",
		i:    func(st pgsession.Stats) int64 { return st.ReplicaErrors }},
}

// listenerStates are the values of StateKey.
var listenerStates = []pgsession.ListenerState{pgsession.ListenerUp, pgsession.ListenerDown, pgsession.ListenerOff}

// Register creates the instruments for s's Stats and registers the one
// callback that observes them. Unregister the returned Registration to stop
// reporting (say, when s is closed; until then a closed Store reports its
// final counts). Register fails when the MeterProvider rejects an
// instrument or the callback.
func Register(s *pgsession.Store, opts ...Option) (metric.Registration, error) {
	if s == nil {
		return nil, errors.New("pgsessionotel: nil Store")
	}
	return register(s.Stats, opts...)
}

// register is Register with the source of the snapshots as a function, so
// tests can give synthetic ones.
func register(stats func() pgsession.Stats, opts ...Option) (metric.Registration, error) {
	cfg := config{}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.provider == nil {
		cfg.provider = otel.GetMeterProvider()
	}
	meter := cfg.provider.Meter(ScopeName)

	observables := make([]metric.Observable, len(instruments))
	var errs []error
	for n, in := range instruments {
		var (
			o   metric.Observable
			err error
		)
		switch in.kind {
		case intCounter:
			o, err = meter.Int64ObservableCounter(in.name, metric.WithUnit(in.unit), metric.WithDescription(in.desc))
		case intUpDownCounter:
			o, err = meter.Int64ObservableUpDownCounter(in.name, metric.WithUnit(in.unit), metric.WithDescription(in.desc))
		case intGauge:
			o, err = meter.Int64ObservableGauge(in.name, metric.WithUnit(in.unit), metric.WithDescription(in.desc))
		case floatCounter:
			o, err = meter.Float64ObservableCounter(in.name, metric.WithUnit(in.unit), metric.WithDescription(in.desc))
		case floatGauge:
			o, err = meter.Float64ObservableGauge(in.name, metric.WithUnit(in.unit), metric.WithDescription(in.desc))
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", in.name, err))
		}
		observables[n] = o
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("pgsessionotel: %w", errors.Join(errs...))
	}

	common := metric.WithAttributeSet(attribute.NewSet(cfg.attrs...))
	stateOpts := make([]metric.ObserveOption, len(listenerStates))
	for n, state := range listenerStates {
		kv := append(append([]attribute.KeyValue(nil), cfg.attrs...), StateKey.String(state.String()))
		stateOpts[n] = metric.WithAttributeSet(attribute.NewSet(kv...))
	}

	reg, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		st := stats()
		for n, in := range instruments {
			switch obs := observables[n].(type) {
			case metric.Int64Observable:
				if in.i == nil { // the listener state
					for k, state := range listenerStates {
						v := int64(0)
						if st.Listener == state {
							v = 1
						}
						o.ObserveInt64(obs, v, stateOpts[k])
					}
					continue
				}
				o.ObserveInt64(obs, in.i(st), common)
			case metric.Float64Observable:
				o.ObserveFloat64(obs, in.f(st), common)
			}
		}
		return nil
	}, observables...)
	if err != nil {
		return nil, fmt.Errorf("pgsessionotel: %w", err)
	}
	return reg, nil
}
