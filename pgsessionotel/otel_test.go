package pgsessionotel

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/pgsession/pgsession"
)

// The database: the root module's tests use the same variable and default.
const (
	envDatabaseURL   = "PGSESSION_TEST_DATABASE_URL"
	localDatabaseURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
)

// TestEveryStatsFieldHasAnInstrument fails when a field is added to
// pgsession.Stats without an instrument here, and for an instrument whose
// field is gone.
func TestEveryStatsFieldHasAnInstrument(t *testing.T) {
	typ := reflect.TypeFor[pgsession.Stats]()
	mapped := map[string]bool{}
	names := map[string]bool{}
	for _, in := range instruments {
		if mapped[in.field] {
			t.Errorf("Stats.%s has two instruments", in.field)
		}
		mapped[in.field] = true
		if names[in.name] {
			t.Errorf("instrument %s is used twice", in.name)
		}
		names[in.name] = true
		if _, ok := typ.FieldByName(in.field); !ok {
			t.Errorf("instrument %s reports Stats.%s, which does not exist", in.name, in.field)
		}
		if !strings.HasPrefix(in.name, "pgsession.") || strings.Contains(in.name, "total") {
			t.Errorf("instrument %s: want pgsession.<name>, without total", in.name)
		}
		isInt := in.kind == intCounter || in.kind == intUpDownCounter || in.kind == intGauge
		if (in.field == "Listener") != (in.i == nil && in.f == nil) || isInt && in.f != nil || !isInt && in.f == nil {
			t.Errorf("instrument %s: its value function does not match its kind", in.name)
		}
	}
	for i := range typ.NumField() {
		if f := typ.Field(i); f.IsExported() && !mapped[f.Name] {
			t.Errorf("Stats.%s has no instrument: add it to instruments in otel.go (and to the README's metric table)", f.Name)
		}
	}
}

// point is one data point: its instrument's name, attributes and value.
type point struct {
	name  string
	attrs attribute.Set
	value float64
}

// collect reads every data point of reader's scope.
func collect(t *testing.T, reader sdkmetric.Reader) []point {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var points []point
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != ScopeName {
			t.Errorf("scope %q, want %q", sm.Scope.Name, ScopeName)
		}
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					points = append(points, point{m.Name, p.Attributes, float64(p.Value)})
				}
			case metricdata.Sum[float64]:
				for _, p := range d.DataPoints {
					points = append(points, point{m.Name, p.Attributes, p.Value})
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					points = append(points, point{m.Name, p.Attributes, float64(p.Value)})
				}
			case metricdata.Gauge[float64]:
				for _, p := range d.DataPoints {
					points = append(points, point{m.Name, p.Attributes, p.Value})
				}
			default:
				t.Errorf("%s: unexpected data %T", m.Name, m.Data)
			}
		}
	}
	return points
}

// byName returns the value of every point without a listener state by
// instrument name, and the listener status by state.
func byName(t *testing.T, points []point, want attribute.Set) (values, states map[string]float64) {
	t.Helper()
	values, states = map[string]float64{}, map[string]float64{}
	for _, p := range points {
		if state, ok := p.attrs.Value(StateKey); ok {
			states[state.AsString()] = p.value
			kv := p.attrs.ToSlice()
			var rest []attribute.KeyValue
			for _, a := range kv {
				if a.Key != StateKey {
					rest = append(rest, a)
				}
			}
			if s := attribute.NewSet(rest...); !s.Equals(&want) {
				t.Errorf("%s: attributes %v, want %v and the state", p.name, p.attrs.Encoded(attribute.DefaultEncoder()), want.Encoded(attribute.DefaultEncoder()))
			}
			continue
		}
		if !p.attrs.Equals(&want) {
			t.Errorf("%s: attributes %v, want %v", p.name, p.attrs.Encoded(attribute.DefaultEncoder()), want.Encoded(attribute.DefaultEncoder()))
		}
		values[p.name] = p.value
	}
	return values, states
}

// TestValuesFollowTheirFields gives every Stats field a value of its own and
// checks that each instrument reports its field's, from one Stats call per
// collection.
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

	calls := 0
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer provider.Shutdown(context.Background())
	attrs := []attribute.KeyValue{attribute.String("pgsession.store", "x")}
	reg, err := register(func() pgsession.Stats { calls++; return st },
		WithMeterProvider(provider), WithAttributes(attrs...))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Unregister()

	values, states := byName(t, collect(t, reader), attribute.NewSet(attrs...))
	if calls != 1 {
		t.Errorf("one collection called Stats %d times, want 1", calls)
	}
	for _, in := range instruments {
		if w, ok := want[in.field]; ok && values[in.name] != w {
			t.Errorf("%s (Stats.%s) = %v, want %v", in.name, in.field, values[in.name], w)
		}
	}
	if len(values) != len(want) {
		t.Errorf("%d instruments without a state reported, want %d", len(values), len(want))
	}
	if want := map[string]float64{"up": 0, "down": 1, "off": 0}; !reflect.DeepEqual(states, want) {
		t.Errorf("pgsession.listener.status = %v, want %v", states, want)
	}
	collect(t, reader)
	if calls != 2 {
		t.Errorf("two collections called Stats %d times, want 2", calls)
	}
}

func TestRegisterOnAStore(t *testing.T) {
	store := newStore(t)
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer provider.Shutdown(context.Background())
	attrs := attribute.NewSet(attribute.String("pgsession.store", "test"))
	reg, err := Register(store, WithMeterProvider(provider), WithAttributes(attrs.ToSlice()...))
	if err != nil {
		t.Fatal(err)
	}

	// Log in twice, read back three times, present a tampered cookie once.
	var cookie string
	for range 2 {
		rec := httptest.NewRecorder()
		s, _ := store.Get(httptest.NewRequest("POST", "/login", nil), "sid")
		s.Values["user"] = "ada"
		if err := s.Save(httptest.NewRequest("POST", "/login", nil), rec); err != nil {
			t.Fatal(err)
		}
		c := rec.Result().Cookies()[0]
		cookie = c.Name + "=" + c.Value
	}
	for range 3 {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Cookie", cookie)
		if s, err := store.Get(r, "sid"); err != nil || s.Values["user"] != "ada" {
			t.Fatalf("Get = %v, %v", s.Values, err)
		}
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Cookie", cookie[:len(cookie)-4]+"AAAA")
	_, _ = store.Get(r, "sid")

	values, states := byName(t, collect(t, reader), attrs)
	st := store.Stats()
	if st.Saves != 2 || st.CacheHits != 3 || st.InvalidCookies != 1 || st.Entries != 2 {
		t.Fatalf("Stats = %+v; want 2 saves, 3 hits, 1 invalid cookie, 2 entries", st)
	}
	// Probes keep changing the notification counts; these stay put.
	for name, want := range map[string]int64{
		"pgsession.saves":             st.Saves,
		"pgsession.cache.hits":        st.CacheHits,
		"pgsession.cache.misses":      st.CacheMisses,
		"pgsession.loads":             st.Loads,
		"pgsession.invalid_cookies":   st.InvalidCookies,
		"pgsession.errors":            st.Errors,
		"pgsession.cache.entry.count": st.Entries,
	} {
		if values[name] != float64(want) {
			t.Errorf("%s = %v, want %d", name, values[name], want)
		}
	}
	if want := map[string]float64{"up": 1, "down": 0, "off": 0}; !reflect.DeepEqual(states, want) {
		t.Errorf("pgsession.listener.status = %v, want %v", states, want)
	}
	if len(values)+len(states) != len(instruments)-1+len(listenerStates) {
		t.Errorf("%d data points, want %d", len(values)+len(states), len(instruments)-1+len(listenerStates))
	}

	if err := reg.Unregister(); err != nil {
		t.Fatal(err)
	}
	if points := collect(t, reader); len(points) != 0 {
		t.Errorf("after Unregister: %d data points, want none", len(points))
	}
}

func TestRegisterDefaultsToTheGlobalMeterProvider(t *testing.T) {
	store := newStore(t)
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer provider.Shutdown(context.Background())
	old := otel.GetMeterProvider()
	otel.SetMeterProvider(provider)
	defer otel.SetMeterProvider(old)

	reg, err := Register(store)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Unregister()
	values, states := byName(t, collect(t, reader), attribute.NewSet())
	if _, ok := values["pgsession.saves"]; !ok || states["up"] != 1 {
		t.Errorf("the global MeterProvider got %v and %v, want pgsession.saves and the listener up", values, states)
	}
}

func TestRegisterNilStore(t *testing.T) {
	if _, err := Register(nil); err == nil {
		t.Error("Register(nil) returned no error")
	}
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
	table := "pgsessionotel_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		_, err := pool.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{table}.Sanitize()+
			"; DROP FUNCTION IF EXISTS "+pgx.Identifier{table + "_notify"}.Sanitize()+"()")
		if err != nil {
			t.Errorf("drop %s: %v", table, err)
		}
	})
	store, err := pgsession.New(ctx, pool, pgsession.Config{
		KeyPairs: [][]byte{[]byte("pgsessionotel-test-hash-key-of-32-bytes")},
		Table:    table,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return store
}
