package observe

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/memory"
	"github.com/idemhq/idem/storage/pebble"
	"github.com/idemhq/idem/storage/storagetest"
)

const defaultTestTimeout = 10 * time.Second

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type instrumentedHarness struct{ m *Metrics }

func (h instrumentedHarness) MakeStore(ctx context.Context, t *testing.T) (storage.Store, storagetest.Clock) {
	clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	return InstrumentStore("memory", memory.New(memory.WithClock(clock)), h.m), clock
}

// The wrapper must not change a single answer of the store it wraps.
func TestInstrumentStoreConformance(t *testing.T) {
	storagetest.RunConformanceTests(t, instrumentedHarness{m: NewMetrics()})
}

func TestInstrumentStoreCounts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	m := NewMetrics()
	// Another open store of the name keeps the series once s is closed.
	defer InstrumentStore("mem", memory.New(), m).Close()
	s := InstrumentStore("mem", memory.New(), m)
	id := storage.ID{Tenant: "t", Namespace: "ns", Key: "k"}
	if _, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id, Fingerprint: []byte("f"), LeaseTTL: time.Minute, Retention: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Complete(ctx, storage.CompleteParams{ID: id, Token: 99, Retention: time.Hour}); !errors.Is(err, storage.ErrLeaseLost) {
		t.Fatalf("Complete(wrong token) error = %v, want ErrLeaseLost", err)
	}
	if _, err := s.Lookup(ctx, storage.ID{Tenant: "t", Namespace: "ns", Key: "absent"}); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Lookup(absent) error = %v, want ErrNotFound", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err == nil {
		t.Fatalf("Ping() after Close error = nil")
	}
	tests := []struct {
		op             string
		wantN, wantErr int
	}{
		{"reserve", 1, 0},
		{"complete", 1, 0}, // lease lost is an answer, not a failure
		{"lookup", 1, 0},   // so is not found
		{"close", 1, 0},
		{"ping", 1, 1},
		{"release", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.op, func(t *testing.T) {
			if got := histCount(t, m, "mem", tt.op); got != uint64(tt.wantN) {
				t.Errorf("observations = %d, want %d", got, tt.wantN)
			}
			if got := testutil.ToFloat64(m.storeErrors.WithLabelValues("mem", tt.op)); got != float64(tt.wantErr) {
				t.Errorf("errors = %v, want %d", got, tt.wantErr)
			}
		})
	}
}

func histCount(t *testing.T, m *Metrics, store, op string) uint64 {
	t.Helper()
	mfs, err := gather(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != NameStoreOpDuration {
			continue
		}
		for _, mt := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range mt.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["store"] == store && labels["op"] == op {
				return mt.GetHistogram().GetSampleCount()
			}
		}
	}
	return 0
}

func gather(m *Metrics) ([]*dto.MetricFamily, error) {
	r := prometheus.NewRegistry()
	if err := m.Register(r); err != nil {
		return nil, err
	}
	return r.Gather()
}

func TestRecordsSwept(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	ps, err := pebble.Open(t.TempDir(), pebble.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics()
	s := InstrumentStore("pebble", ps, m)
	defer s.Close()
	m.RecordsSwept("redis", 3)
	want := `
# HELP idem_records_swept_total Expired records physically deleted by a store's sweeper.
# TYPE idem_records_swept_total counter
idem_records_swept_total{store="pebble"} %d
idem_records_swept_total{store="redis"} 3
`
	if err := testutil.CollectAndCompare(m.swept, strings.NewReader(strings.Replace(want, "%d", "0", 1))); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		id := storage.ID{Tenant: "t", Namespace: "ns", Key: string(rune('a' + i))}
		if _, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id, Fingerprint: []byte("f"), LeaseTTL: time.Second, Retention: time.Second}); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(time.Hour)
	if _, err := ps.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if got := ps.Swept(); got != 5 {
		t.Fatalf("pebble Swept() = %d, want 5", got)
	}
	if err := testutil.CollectAndCompare(m.swept, strings.NewReader(strings.Replace(want, "%d", "5", 1))); err != nil {
		t.Fatal(err)
	}
}

func TestStoreFilter(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	ps, err := pebble.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics()
	s := InstrumentStore("pebble", ps, m)
	defer s.Close()
	defer InstrumentStore("memory", memory.New(), m).Close() // no filter: no series
	// The filter answers once its first scan is done: until a read of a
	// key never stored is answered by it (its bytes count while it is
	// still being built).
	var base uint64
	for deadline := time.Now().Add(defaultTestTimeout); ; {
		if _, err := ps.Lookup(ctx, storage.ID{Tenant: "t", Namespace: "warm", Key: "never"}); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("Lookup() of a key never stored: %v", err)
		}
		if _, base = ps.FilterStats(); base > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("pebble's presence filter not built in time")
		}
		time.Sleep(time.Millisecond)
	}
	for i := range 5 {
		id := storage.ID{Tenant: "t", Namespace: "ns", Key: string(rune('a' + i))}
		if _, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id, Fingerprint: []byte("f"), LeaseTTL: time.Second, Retention: time.Second}); err != nil {
			t.Fatal(err)
		}
	}
	want := `
# HELP idem_store_filter_answered_total Reads of keys a store's key filter knew were never stored, answered without reading the store.
# TYPE idem_store_filter_answered_total counter
idem_store_filter_answered_total{store="pebble"} %d
# HELP idem_store_filter_bytes Memory of a store's in-memory key filter (pebble's presence filter, outside the Go heap).
# TYPE idem_store_filter_bytes gauge
idem_store_filter_bytes{store="pebble"} 2.097152e+06
`
	if err := testutil.CollectAndCompare(m.filter, strings.NewReader(fmt.Sprintf(want, base+5))); err != nil {
		t.Fatal(err)
	}
}

func TestMetricNamesRegistered(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	r := NewRegistry()
	m := r.Metrics
	m.ReserveOutcome("ns", storage.OutcomeCompleted)
	m.Takeover("ns")
	m.LeaseLost("ns", "Complete")
	m.Wait("ns", WaitCompleted, 10*time.Millisecond)
	m.Rejected(RejectInflight)
	m.Inflight().Set(0)
	s := InstrumentStore("memory", memory.New(), m)
	defer s.Close()
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	ps, err := pebble.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer InstrumentStore("pebble", ps, m).Close() // a store with a key filter
	conn := serve(t, grpc.ChainUnaryInterceptor(r.UnaryServerInterceptor()))
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	mfs, err := r.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		n := mf.GetName()
		if !strings.HasPrefix(n, "idem_") && !strings.HasPrefix(n, "grpc_") {
			continue
		}
		got = append(got, n)
		var labels []string
		for _, l := range mf.GetMetric()[0].GetLabel() {
			labels = append(labels, l.GetName())
		}
		want := slices.Clone(MetricLabels[n])
		slices.Sort(labels)
		slices.Sort(want)
		if !slices.Equal(labels, want) {
			t.Errorf("%s labels = %v, MetricLabels says %v", n, labels, want)
		}
	}
	want := slices.Concat(MetricNames, GRPCMetricNames)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("registered families = %v\nwant %v", got, want)
	}
	for _, n := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if !slices.ContainsFunc(mfs, func(mf *dto.MetricFamily) bool { return mf.GetName() == n }) {
			t.Errorf("family %s not registered", n)
		}
	}

	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`idem_reserve_outcomes_total{namespace="ns",outcome="completed"} 1`, `grpc_server_handled_total{grpc_code="OK",grpc_method="Check"`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics does not contain %q", want)
		}
	}
}

func TestNamespaceLabelBounded(t *testing.T) {
	m := NewMetrics(WithMaxNamespaces(2))
	var wg sync.WaitGroup
	for _, ns := range []string{"a", "b", "a", "b"} {
		wg.Add(1)
		go func() { defer wg.Done(); m.ReserveOutcome(ns, storage.OutcomeReserved) }()
	}
	wg.Wait()
	tests := []struct{ ns, want string }{{"a", "a"}, {"b", "b"}, {"c", OtherNamespace}, {"d", OtherNamespace}, {"a", "a"}}
	for _, tt := range tests {
		if got := m.Namespace(tt.ns); got != tt.want {
			t.Errorf("Namespace(%q) = %q, want %q", tt.ns, got, tt.want)
		}
	}
	var nilM *Metrics
	nilM.ReserveOutcome("x", storage.OutcomeReserved) // must not panic
	nilM.Wait("x", WaitCanceled, time.Second)
}

func TestHashKey(t *testing.T) {
	a, b := HashKey("order-42"), HashKey("order-43")
	if len(a) != 12 || a == b || HashKey("order-42") != a || strings.Contains(a, "order") {
		t.Errorf("HashKey = %q, %q; want 12 stable hex digits that differ", a, b)
	}
}

// lookupService answers Lookup with NOT_FOUND, as the real service does for an absent key.
type lookupService struct {
	idemv1.UnimplementedIdempotencyServiceServer
}

func (lookupService) Lookup(context.Context, *idemv1.LookupRequest) (*idemv1.LookupResponse, error) {
	return nil, status.Error(codes.NotFound, "idem: record not found")
}

func listen(t *testing.T) *bufconn.Listener {
	t.Helper()
	return bufconn.Listen(1 << 20)
}

func serve(t *testing.T, opts ...grpc.ServerOption) *grpc.ClientConn {
	t.Helper()
	lis := listen(t)
	srv := grpc.NewServer(opts...)
	idemv1.RegisterIdempotencyServiceServer(srv, lookupService{})
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return dialBuf(t, lis)
}

func dialBuf(t *testing.T, lis *bufconn.Listener) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestLoggingInterceptor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	tp := sdktrace.NewTracerProvider()
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	defer func() { otel.SetTracerProvider(prev); _ = tp.Shutdown(ctx) }()
	shutdown, err := SetupTracing(ctx, "idemd", "test", slog.New(slog.DiscardHandler)) // no endpoint: propagation only
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(ctx)

	var buf syncBuffer
	l := NewLogger(&buf, -8)
	conn := serve(t, StatsHandler(),
		grpc.ChainUnaryInterceptor(UnaryServerInterceptor(l)),
		grpc.ChainStreamInterceptor(StreamServerInterceptor(l)))
	const key = "customer-4711-charge-secret"
	_, err = idemv1.NewIdempotencyServiceClient(conn).Lookup(ctx, &idemv1.LookupRequest{Tenant: "acme", Namespace: "/pay.v1.Pay/Charge", Key: key})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("Lookup() error = %v, want NotFound", err)
	}
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if strings.Contains(out, key) {
		t.Fatalf("log contains the raw key: %s", out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 1 {
		t.Fatalf("log has %d lines, want 1 (health checks are not logged): %s", len(lines), out)
	}
	var line map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &line); err != nil {
		t.Fatalf("log line is not JSON: %v: %s", err, lines[0])
	}
	want := map[string]any{
		"msg": "finished call", "grpc.method": "Lookup", "grpc.service": "idem.v1.IdempotencyService",
		"grpc.code": "NotFound", "tenant": "acme", "namespace": "/pay.v1.Pay/Charge", "key_hash": HashKey(key),
	}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("log field %s = %v, want %v", k, line[k], v)
		}
	}
	if _, ok := line["latency_ms"].(float64); !ok {
		t.Errorf("log field latency_ms = %v, want a number", line["latency_ms"])
	}
	if id, _ := line["trace_id"].(string); !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(id) {
		t.Errorf("log field trace_id = %q, want 32 hex digits", id)
	}
}

func TestSetupTracingExportsOnlyWithEndpoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	prev := otel.GetTracerProvider()
	defer otel.SetTracerProvider(prev)

	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	if _, err := SetupTracing(ctx, "idemd", "test", slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if _, ok := otel.GetTracerProvider().(*sdktrace.TracerProvider); ok {
		t.Fatalf("tracer provider installed without an endpoint")
	}

	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	shutdown, err := SetupTracing(ctx, "idemd", "test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("SetupTracing() error = %v", err)
	}
	if _, ok := otel.GetTracerProvider().(*sdktrace.TracerProvider); !ok {
		t.Errorf("tracer provider = %T, want the SDK's", otel.GetTracerProvider())
	}
	sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
	defer scancel()
	_ = shutdown(sctx) // nothing listens; only the goroutines must end
}

// BenchmarkInstrumentStore is the wrapper's cost per store call.
func BenchmarkInstrumentStore(b *testing.B) {
	ctx := context.Background()
	id := storage.ID{Tenant: "t", Namespace: "ns", Key: "absent"}
	for _, bc := range []struct {
		name string
		wrap bool
	}{{"raw", false}, {"instrumented", true}} {
		b.Run(bc.name, func(b *testing.B) {
			var s storage.Store = memory.New()
			defer s.Close()
			if bc.wrap {
				s = InstrumentStore("memory", s, NewMetrics())
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Lookup(ctx, id); !errors.Is(err, storage.ErrNotFound) {
					b.Fatal(err)
				}
			}
		})
	}
}
