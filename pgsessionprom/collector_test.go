package pgsessionprom

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/pgsession/pgsession"
)

// The database: the root module's tests use the same variable and default.
const (
	envDatabaseURL   = "PGSESSION_TEST_DATABASE_URL"
	localDatabaseURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
)

// TestEveryStatsFieldHasAMetric fails when a field is added to
// pgsession.Stats without a metric here, and for a metric whose field is
// gone.
func TestEveryStatsFieldHasAMetric(t *testing.T) {
	typ := reflect.TypeFor[pgsession.Stats]()
	mapped := map[string]bool{}
	names := map[string]bool{}
	for _, m := range metrics {
		if mapped[m.field] {
			t.Errorf("Stats.%s has two metrics", m.field)
		}
		mapped[m.field] = true
		if names[m.name] {
			t.Errorf("metric %s is used twice", m.name)
		}
		names[m.name] = true
		if _, ok := typ.FieldByName(m.field); !ok {
			t.Errorf("metric %s exports Stats.%s, which does not exist", m.name, m.field)
		}
		if !strings.HasPrefix(m.name, "pgsession_") {
			t.Errorf("metric %s: want the prefix pgsession_", m.name)
		}
		if (m.typ == counter) != strings.HasSuffix(m.name, "_total") {
			t.Errorf("metric %s: counters, and only counters, end in _total", m.name)
		}
	}
	for i := range typ.NumField() {
		if f := typ.Field(i); f.IsExported() && !mapped[f.Name] {
			t.Errorf("Stats.%s has no metric: add it to metrics in collector.go (and to the README's metric table)", f.Name)
		}
	}
}

// TestValuesFollowTheirFields gives every Stats field a value of its own
// and checks that each metric reports its field's.
func TestValuesFollowTheirFields(t *testing.T) {
	var st pgsession.Stats
	v := reflect.ValueOf(&st).Elem()
	want := map[string]float64{}
	for i := range v.NumField() {
		f, name := v.Field(i), v.Type().Field(i).Name
		n := int64(i + 1)
		switch {
		case f.Type() == reflect.TypeFor[time.Duration]():
			f.SetInt(n * int64(time.Second))
			want[name] = float64(n)
		case f.Type() == reflect.TypeFor[pgsession.ListenerState]():
			f.SetInt(int64(pgsession.ListenerDown))
		case f.Kind() == reflect.Int64:
			f.SetInt(n)
			want[name] = float64(n)
		case f.Kind() == reflect.Float64:
			f.SetFloat(float64(n) / 100)
			want[name] = float64(n) / 100
		default:
			t.Fatalf("Stats.%s: a field of type %s; teach this test its values", name, f.Type())
		}
	}

	c := NewCollector(nil, prometheus.Labels{"store": "x"}).(*collector)
	ch := make(chan prometheus.Metric, 100)
	c.collect(st, ch)
	close(ch)
	got := map[string]float64{}
	states := map[string]float64{}
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
		desc := m.Desc().String()
		var field string
		for i, d := range c.descs {
			if d.String() == desc {
				field = metrics[i].field
			}
		}
		val := pb.GetCounter().GetValue() + pb.GetGauge().GetValue()
		if field == "Listener" {
			for _, l := range pb.GetLabel() {
				if l.GetName() == stateLabel {
					states[l.GetValue()] = val
				}
			}
			continue
		}
		got[field] = val
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("metric of Stats.%s = %v, want %v", name, got[name], w)
		}
	}
	if want := map[string]float64{"up": 0, "down": 1, "off": 0}; !reflect.DeepEqual(states, want) {
		t.Errorf("pgsession_listener_state = %v, want %v", states, want)
	}
}

func TestCollectorOnAStore(t *testing.T) {
	store := newStore(t)
	c := NewCollector(store, prometheus.Labels{"store": "test"})

	// Log in, read back three times, present a tampered cookie once.
	login := httptest.NewRecorder()
	s, _ := store.Get(httptest.NewRequest("POST", "/login", nil), "sid")
	s.Values["user"] = "ada"
	if err := s.Save(httptest.NewRequest("POST", "/login", nil), login); err != nil {
		t.Fatal(err)
	}
	cookie := login.Result().Cookies()[0]
	for range 3 {
		r := httptest.NewRequest("GET", "/", nil)
		r.AddCookie(cookie)
		if s, err := store.Get(r, "sid"); err != nil || s.Values["user"] != "ada" {
			t.Fatalf("Get = %v, %v", s.Values, err)
		}
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.AddCookie(&http.Cookie{Name: "sid", Value: cookie.Value[:len(cookie.Value)-4] + "AAAA"})
	_, _ = store.Get(r, "sid")

	st := store.Stats()
	if st.Saves != 1 || st.CacheHits != 3 || st.InvalidCookies != 1 || st.Entries != 1 || st.Listener != pgsession.ListenerUp {
		t.Fatalf("Stats = %+v; want 1 save, 3 hits, 1 invalid cookie, 1 entry, listener up", st)
	}
	// Probes keep changing the notification counts; these stay put.
	expected := fmt.Sprintf(`
# HELP pgsession_cache_entries Sessions in the cache now.
# TYPE pgsession_cache_entries gauge
pgsession_cache_entries{store="test"} %d
# HELP pgsession_cache_hits_total Gets served from the in-process cache.
# TYPE pgsession_cache_hits_total counter
pgsession_cache_hits_total{store="test"} %d
# HELP pgsession_invalid_cookies_total Cookies that failed verification (tampered, foreign key, truncated).
# TYPE pgsession_invalid_cookies_total counter
pgsession_invalid_cookies_total{store="test"} %d
# HELP pgsession_listener_state The listener's state: 1 for the current one. The cache serves only while it is up.
# TYPE pgsession_listener_state gauge
pgsession_listener_state{state="down",store="test"} 0
pgsession_listener_state{state="off",store="test"} 0
pgsession_listener_state{state="up",store="test"} 1
# HELP pgsession_saves_total Sessions written to the database (insert or update), Regenerate included.
# TYPE pgsession_saves_total counter
pgsession_saves_total{store="test"} %d
`, st.Entries, st.CacheHits, st.InvalidCookies, st.Saves)
	if err := testutil.CollectAndCompare(c, strings.NewReader(expected),
		"pgsession_cache_entries", "pgsession_cache_hits_total", "pgsession_invalid_cookies_total",
		"pgsession_listener_state", "pgsession_saves_total"); err != nil {
		t.Error(err)
	}

	// One series per metric, three for the listener state.
	if n, want := testutil.CollectAndCount(c), len(metrics)-1+len(listenerStates); n != want {
		t.Errorf("CollectAndCount = %d, want %d", n, want)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}

	// A pedantic registry checks that Collect sends what Describe announced.
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}

	// After Close the collector reports the final counts.
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	if v := testutil.ToFloat64(collectorOf(c, "pgsession_saves_total")); v != 1 {
		t.Errorf("pgsession_saves_total after Close = %v, want 1", v)
	}
}

func TestOneStatsPerCollect(t *testing.T) {
	c := NewCollector(nil, nil).(*collector)
	calls := 0
	c.stats = func() pgsession.Stats { calls++; return pgsession.Stats{} }
	if n := testutil.CollectAndCount(c); n == 0 || calls != 1 {
		t.Errorf("a Collect of %d metrics called Stats %d times, want 1", n, calls)
	}
}

func TestLabelsTellStoresApart(t *testing.T) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(NewCollector(nil, prometheus.Labels{"store": "a"})); err != nil {
		t.Fatal(err)
	}
	if err := reg.Register(NewCollector(nil, prometheus.Labels{"store": "b"})); err != nil {
		t.Fatal(err)
	}
	if err := reg.Register(NewCollector(nil, prometheus.Labels{"store": "a"})); err == nil {
		t.Error("a second collector with the same labels registered")
	}
	if err := reg.Register(NewCollector(nil, prometheus.Labels{stateLabel: "x"})); err == nil {
		t.Error(`a collector with the constant label "state" registered`)
	}
}

// collectorOf narrows c to the metric called name, for testutil.ToFloat64.
func collectorOf(c prometheus.Collector, name string) prometheus.Collector {
	return prometheus.CollectorFunc(func(ch chan<- prometheus.Metric) {
		all := make(chan prometheus.Metric)
		go func() { c.Collect(all); close(all) }()
		for m := range all {
			if strings.Contains(m.Desc().String(), `fqName: "`+name+`"`) {
				ch <- m
			}
		}
	})
}

// newStore returns a Store on a table of the test's own, dropped at
// cleanup.
func newStore(t *testing.T) *pgsession.Store {
	t.Helper()
	url := os.Getenv(envDatabaseURL)
	if url == "" {
		url = localDatabaseURL
	}
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		t.Fatalf("no PostgreSQL at %s (set %s): %v", url, envDatabaseURL, err)
	}
	t.Cleanup(pool.Close)
	var b [4]byte
	_, _ = rand.Read(b[:])
	table := "pgsessionprom_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		_, err := pool.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{table}.Sanitize()+
			"; DROP FUNCTION IF EXISTS "+pgx.Identifier{table + "_notify"}.Sanitize()+"()")
		if err != nil {
			t.Errorf("drop %s: %v", table, err)
		}
	})
	store, err := pgsession.New(ctx, pool, pgsession.Config{
		KeyPairs: [][]byte{[]byte("pgsessionprom-test-hash-key-of-32-bytes")},
		Table:    table,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return store
}
