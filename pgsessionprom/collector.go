// Package pgsessionprom exports a pgsession.Store's Stats as Prometheus
// metrics.
//
//	prometheus.MustRegister(pgsessionprom.NewCollector(store, nil))
//
// Every scrape takes one Stats snapshot, so the metrics of one scrape are
// consistent with each other. Counters are named pgsession_*_total, the
// listener's state is pgsession_listener_state{state="up"|"down"|"off"}
// (1 for the current state, 0 for the others), and the cluster's NOTIFY
// queue usage is pgsession_notify_queue_usage_ratio (0 to 1).
//
// It is a module of its own so that pgsession itself does not depend on
// the Prometheus client.
package pgsessionprom

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgsession/pgsession"
)

// metric exports one field of pgsession.Stats. Every field has one: a test
// fails for a field missing here.
type metric struct {
	field string // the pgsession.Stats field
	name  string
	help  string
	typ   prometheus.ValueType
	value func(pgsession.Stats) float64 // nil for the listener state, which has a series per state
}

// stateLabel is the label of pgsession_listener_state.
const stateLabel = "state"

// listenerStates are the values of pgsession_listener_state's state label.
var listenerStates = []pgsession.ListenerState{pgsession.ListenerUp, pgsession.ListenerDown, pgsession.ListenerOff}

const (
	counter = prometheus.CounterValue
	gauge   = prometheus.GaugeValue
)

// metrics maps every field of pgsession.Stats to its metric, in the order of
// the fields.
var metrics = []metric{
	// Reads and writes.
	{"CacheHits", "pgsession_cache_hits_total", "Gets served from the in-process cache.", counter,
		func(st pgsession.Stats) float64 { return float64(st.CacheHits) }},
	{"CacheMisses", "pgsession_cache_misses_total", "Gets of a valid cookie that the cache could not serve (absent, stale, or the listener down).", counter,
		func(st pgsession.Stats) float64 { return float64(st.CacheMisses) }},
	{"Loads", "pgsession_loads_total", "SELECTs run for cache misses (concurrent misses of one session share one).", counter,
		func(st pgsession.Stats) float64 { return float64(st.Loads) }},
	{"Saves", "pgsession_saves_total", "Sessions written to the database (insert or update), Regenerate included.", counter,
		func(st pgsession.Stats) float64 { return float64(st.Saves) }},
	{"SavesSkipped", "pgsession_saves_skipped_total", "Saves that needed no database round trip: values and expiry unchanged.", counter,
		func(st pgsession.Stats) float64 { return float64(st.SavesSkipped) }},
	{"Refreshes", "pgsession_refreshes_total", "Saves of unchanged values that only extended the stored expiry.", counter,
		func(st pgsession.Stats) float64 { return float64(st.Refreshes) }},
	{"Deletes", "pgsession_deletes_total", "Sessions deleted (Save with MaxAge < 0, Delete) that existed.", counter,
		func(st pgsession.Stats) float64 { return float64(st.Deletes) }},
	{"Revocations", "pgsession_revocations_total", "Sessions logged out by Revoke, LogoutUser and LogoutOthers.", counter,
		func(st pgsession.Stats) float64 { return float64(st.Revocations) }},
	{"InvalidCookies", "pgsession_invalid_cookies_total", "Cookies that failed verification (tampered, foreign key, truncated).", counter,
		func(st pgsession.Stats) float64 { return float64(st.InvalidCookies) }},
	{"Errors", "pgsession_errors_total", "Operations that returned an error.", counter,
		func(st pgsession.Stats) float64 { return float64(st.Errors) }},
	{"Entries", "pgsession_cache_entries", "Sessions in the cache now.", gauge,
		func(st pgsession.Stats) float64 { return float64(st.Entries) }},
	{"CacheBytes", "pgsession_cache_bytes", "What the cached sessions count against Config.CacheBytes: their data plus about 200 bytes each.", gauge,
		func(st pgsession.Stats) float64 { return float64(st.CacheBytes) }},

	// Coherence across instances.
	{"Notifications", "pgsession_notifications_total", "Invalidation notifications received, this store's own echoes and probes included.", counter,
		func(st pgsession.Stats) float64 { return float64(st.Notifications) }},
	{"NotifyEvictions", "pgsession_notify_evictions_total", "Cache entries evicted by another instance's notification.", counter,
		func(st pgsession.Stats) float64 { return float64(st.NotifyEvictions) }},
	{"BadNotifications", "pgsession_bad_notifications_total", "Malformed notifications on the channel, ignored.", counter,
		func(st pgsession.Stats) float64 { return float64(st.BadNotifications) }},
	{"ListenerReconnects", "pgsession_listener_reconnects_total", "Times the listener reconnected after losing its connection.", counter,
		func(st pgsession.Stats) float64 { return float64(st.ListenerReconnects) }},
	{"CacheDrops", "pgsession_cache_drops_total", "Times the whole cache was dropped (reconnect, hand-off overflow, Clear elsewhere).", counter,
		func(st pgsession.Stats) float64 { return float64(st.CacheDrops) }},
	{"ListenerDowntime", "pgsession_listener_downtime_seconds_total", "Total time the listener was down, the current outage included.", counter,
		func(st pgsession.Stats) float64 { return st.ListenerDowntime.Seconds() }},
	{"Listener", "pgsession_listener_state", "The listener's state: 1 for the current one. The cache serves only while it is up.", gauge,
		nil},
	{"ProbeErrors", "pgsession_probe_errors_total", "Probes (notifications to itself) that could not be sent.", counter,
		func(st pgsession.Stats) float64 { return float64(st.ProbeErrors) }},
	{"NotifyQueueUsage", "pgsession_notify_queue_usage_ratio", "pg_notification_queue_usage() at the last probe: the cluster's NOTIFY queue, 0 to 1; writes fail when it is full.", gauge,
		func(st pgsession.Stats) float64 { return st.NotifyQueueUsage }},
	{"Revalidations", "pgsession_revalidations_total", "Gets whose cached copy was older than MaxStale, so read again from the database (CoherenceRevocations).", counter,
		func(st pgsession.Stats) float64 { return float64(st.Revalidations) }},

	// Idle entries and expired rows.
	{"Scavenged", "pgsession_scavenged_total", "Cache entries evicted for being idle longer than MaxIdle (or expired).", counter,
		func(st pgsession.Stats) float64 { return float64(st.Scavenged) }},
	{"PurgeRuns", "pgsession_purge_runs_total", "Purge rounds this instance ran (automatic and PurgeExpired).", counter,
		func(st pgsession.Stats) float64 { return float64(st.PurgeRuns) }},
	{"RowsPurged", "pgsession_rows_purged_total", "Expired rows this instance deleted.", counter,
		func(st pgsession.Stats) float64 { return float64(st.RowsPurged) }},
	{"PurgeSkipped", "pgsession_purge_skipped_total", "Purge rounds skipped because another instance was purging.", counter,
		func(st pgsession.Stats) float64 { return float64(st.PurgeSkipped) }},

	// Group commit.
	{"Batches", "pgsession_batches_total", "Commits that carried more than one write.", counter,
		func(st pgsession.Stats) float64 { return float64(st.Batches) }},
	{"BatchedWrites", "pgsession_batched_writes_total", "Writes that went in a commit with others.", counter,
		func(st pgsession.Stats) float64 { return float64(st.BatchedWrites) }},
	{"BatchRetries", "pgsession_batch_retries_total", "Batches that failed and were retried write by write.", counter,
		func(st pgsession.Stats) float64 { return float64(st.BatchRetries) }},
	{"LockWaits", "pgsession_lock_waits_total", "Writes whose row another transaction held, so they went alone and waited for it.", counter,
		func(st pgsession.Stats) float64 { return float64(st.LockWaits) }},
	{"TouchesSent", "pgsession_touches_sent_total", "Sessions whose row a touch was sent to extend, for reads of them (IdleTimeout).", counter,
		func(st pgsession.Stats) float64 { return float64(st.TouchesSent) }},
	{"TouchesFailed", "pgsession_touches_failed_total", "Sessions whose touch failed or could not be scheduled (IdleTimeout).", counter,
		func(st pgsession.Stats) float64 { return float64(st.TouchesFailed) }},

	// Reads from a replica (Config.ReadPool).
	{"ReplicaReads", "pgsession_replica_reads_total", "Loads answered by the ReadPool (a streaming standby).", counter,
		func(st pgsession.Stats) float64 { return float64(st.ReplicaReads) }},
	{"ReplicaFallbacks", "pgsession_replica_fallbacks_total", "Loads the ReadPool answered too stale to use (replication lag), then read from the primary.", counter,
		func(st pgsession.Stats) float64 { return float64(st.ReplicaFallbacks) }},
	{"ReplicaErrors", "pgsession_replica_errors_total", "Loads whose read of the ReadPool failed, then read from the primary.", counter,
		func(st pgsession.Stats) float64 { return float64(st.ReplicaErrors) }},
}

// collector is the prometheus.Collector of one Store.
type collector struct {
	stats func() pgsession.Stats // the Store's Stats method
	descs []*prometheus.Desc     // descs[i] describes metrics[i]
}

// NewCollector returns a Collector of s's Stats. labels are constant labels
// added to every metric: give each Store registered with one registry its
// own (say, prometheus.Labels{"store": "admin"}); nil is fine for one
// Store. A label named "state" is taken by pgsession_listener_state, so
// registering a collector with one fails.
//
// Every Collect reads s.Stats() once. The collector keeps working after
// s.Close, reporting the final counts.
func NewCollector(s *pgsession.Store, labels prometheus.Labels) prometheus.Collector {
	c := &collector{stats: s.Stats, descs: make([]*prometheus.Desc, len(metrics))}
	for i, m := range metrics {
		var variable []string
		if m.value == nil {
			variable = []string{stateLabel}
		}
		c.descs[i] = prometheus.NewDesc(m.name, m.help, variable, labels)
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.collect(c.stats(), ch)
}

// collect sends the metrics of one snapshot.
func (c *collector) collect(st pgsession.Stats, ch chan<- prometheus.Metric) {
	for i, m := range metrics {
		if m.value == nil {
			for _, state := range listenerStates {
				v := 0.0
				if st.Listener == state {
					v = 1
				}
				send(ch, c.descs[i], m.typ, v, state.String())
			}
			continue
		}
		send(ch, c.descs[i], m.typ, m.value(st))
	}
}

// send sends one sample, or an invalid metric carrying the error of a
// faulty Desc (say, a constant label named "state"), which the registry
// reports instead of the collector panicking.
func send(ch chan<- prometheus.Metric, d *prometheus.Desc, typ prometheus.ValueType, v float64, labels ...string) {
	m, err := prometheus.NewConstMetric(d, typ, v, labels...)
	if err != nil {
		m = prometheus.NewInvalidMetric(d, err)
	}
	ch <- m
}
