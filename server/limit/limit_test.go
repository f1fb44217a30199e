package limit

import (
	"context"
	"flag"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server/auth"
	"github.com/idemhq/idem/server/observe"
)

const defaultTestTimeout = 20 * time.Second

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// slowService holds every Reserve until release is closed; Lookup answers at once.
type slowService struct {
	idemv1.UnimplementedIdempotencyServiceServer
	entered atomic.Int64
	release chan struct{}
}

func (s *slowService) Reserve(ctx context.Context, _ *idemv1.ReserveRequest) (*idemv1.ReserveResponse, error) {
	s.entered.Add(1)
	select {
	case <-s.release:
		return &idemv1.ReserveResponse{}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *slowService) Lookup(context.Context, *idemv1.LookupRequest) (*idemv1.LookupResponse, error) {
	return &idemv1.LookupResponse{}, nil
}

func serve(t *testing.T, l *Limiter, svc *slowService) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(l.UnaryServerInterceptor()), grpc.ChainStreamInterceptor(l.StreamServerInterceptor()))
	idemv1.RegisterIdempotencyServiceServer(srv, svc)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func retryDelay(err error) (time.Duration, bool) {
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}

// waitFor polls cond; the calls it waits for run in other goroutines.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(time.Millisecond):
		}
	}
}

func TestOverloadIsRefusedNotQueued(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	const bound = 16
	reg := observe.NewRegistry()
	m := reg.Metrics
	l := New(Config{MaxInflight: bound}, WithMetrics(m))
	svc := &slowService{release: make(chan struct{})}
	conn := serve(t, l, svc)
	client := idemv1.NewIdempotencyServiceClient(conn)

	// Warm the connection so its goroutines count in the baseline.
	if _, err := client.Lookup(ctx, &idemv1.LookupRequest{}); err != nil {
		t.Fatal(err)
	}

	var ok, refused, other atomic.Int64
	var wg sync.WaitGroup
	call := func() {
		defer wg.Done()
		_, err := client.Reserve(ctx, &idemv1.ReserveRequest{})
		switch {
		case err == nil:
			ok.Add(1)
		case status.Code(err) == codes.ResourceExhausted:
			if d, has := retryDelay(err); !has || d <= 0 {
				t.Errorf("refusal %v has no RetryInfo", err)
			}
			refused.Add(1)
		default:
			t.Errorf("Reserve() error = %v, want OK or ResourceExhausted", err)
			other.Add(1)
		}
	}
	for range 4 * bound {
		wg.Add(1)
		go call()
	}
	// The bound's worth of calls are held in the handler; the rest were
	// refused without waiting for any of them.
	waitFor(ctx, t, "the excess to be refused", func() bool { return refused.Load() == 3*bound })
	waitFor(ctx, t, "the bound to be held", func() bool { return svc.entered.Load() == bound })
	if got := testutil.ToFloat64(m.Inflight()); got != bound {
		t.Errorf("idem_inflight_calls = %v, want %d", got, bound)
	}

	// More waves of overload leave nothing behind: no queued goroutines.
	runtime.GC()
	base := runtime.NumGoroutine()
	for wave := range 5 {
		before := refused.Load()
		for range 4 * bound {
			wg.Add(1)
			go call()
		}
		waitFor(ctx, t, fmt.Sprintf("wave %d refused", wave), func() bool { return refused.Load() == before+4*bound })
		waitFor(ctx, t, "client goroutines to end", func() bool { return runtime.NumGoroutine() <= base+4 })
	}
	if got := svc.entered.Load(); got != bound {
		t.Errorf("handler entered %d times under overload, want %d", got, bound)
	}

	// Health checks are never refused, even at the bound.
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health Check() at the bound error = %v", err)
	}

	close(svc.release)
	wg.Wait()
	if ok.Load() != bound || other.Load() != 0 {
		t.Errorf("succeeded %d, other errors %d; want %d and 0", ok.Load(), other.Load(), bound)
	}
	if got, want := testutil.ToFloat64(m.Inflight()), 0.0; got != want {
		t.Errorf("idem_inflight_calls after = %v, want %v", got, want)
	}
	if got := rejected(t, reg, observe.RejectInflight); got != float64(refused.Load()) {
		t.Errorf("idem_rejected_total{reason=inflight} = %v, want %d", got, refused.Load())
	}

	// Below the bound every call is served.
	for i := range 3 * bound {
		if _, err := client.Reserve(ctx, &idemv1.ReserveRequest{}); err != nil {
			t.Fatalf("call %d under the bound error = %v", i, err)
		}
	}
}

// rejected reads idem_rejected_total{reason}.
func rejected(t *testing.T, r *observe.Registry, reason string) float64 {
	t.Helper()
	mfs, err := r.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != observe.NameRejected {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestTenantRate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	clock := clockwork.NewFakeClock()
	reg := observe.NewRegistry()
	l := New(Config{TenantRate: 10, TenantBurst: 2}, WithClock(clock), WithMetrics(reg.Metrics))
	info := &grpc.UnaryServerInfo{FullMethod: "/idem.v1.IdempotencyService/Reserve"}
	handler := func(context.Context, any) (any, error) { return "ok", nil }
	call := l.UnaryServerInterceptor()
	as := func(tenant string) context.Context {
		return auth.NewContext(ctx, auth.Identity{Tenant: tenant, Role: auth.RoleClient})
	}
	steps := []struct {
		name      string
		ctx       context.Context
		req       any
		advance   time.Duration
		wantCode  codes.Code
		wantDelay time.Duration
	}{
		{name: "a burst 1", ctx: as("a")},
		{name: "a burst 2", ctx: as("a")},
		{name: "a over", ctx: as("a"), wantCode: codes.ResourceExhausted, wantDelay: 100 * time.Millisecond},
		// The identity wins over the tenant a request names.
		{name: "a naming b", ctx: as("a"), req: &idemv1.ReserveRequest{Tenant: "b"}, wantCode: codes.ResourceExhausted, wantDelay: 100 * time.Millisecond},
		{name: "b has its own bucket", ctx: as("b")},
		{name: "unauthenticated request tenant", ctx: ctx, req: &idemv1.ReserveRequest{Tenant: "c"}},
		{name: "a after refill", ctx: as("a"), advance: 100 * time.Millisecond},
		{name: "a over again", ctx: as("a"), wantCode: codes.ResourceExhausted, wantDelay: 100 * time.Millisecond},
		{name: "health is exempt", ctx: as("a")},
	}
	for _, st := range steps {
		clock.Advance(st.advance)
		i := info
		if st.name == "health is exempt" {
			i = &grpc.UnaryServerInfo{FullMethod: "/grpc.health.v1.Health/Check"}
		}
		_, err := call(st.ctx, st.req, i, handler)
		if code := status.Code(err); code != st.wantCode {
			t.Fatalf("%s: error = %v, want code %v", st.name, err, st.wantCode)
		}
		if st.wantCode == codes.ResourceExhausted {
			if d, _ := retryDelay(err); d != st.wantDelay {
				t.Errorf("%s: RetryInfo delay = %v, want %v", st.name, d, st.wantDelay)
			}
		}
	}
	if got := rejected(t, reg, observe.RejectRate); got != 3 {
		t.Errorf("idem_rejected_total{reason=rate_limit} = %v, want 3", got)
	}
	if got := l.inflight.Load(); got != 0 {
		t.Errorf("in-flight after refusals = %d, want 0 (a rate refusal gives its slot back)", got)
	}
}

func TestTenantBucketsBounded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	l := New(Config{TenantRate: 1, MaxTenants: 3}, WithClock(clockwork.NewFakeClock()))
	for i := range 100 {
		done, err := l.Admit(ctx, "/idem.v1.IdempotencyService/Lookup", &idemv1.LookupRequest{Tenant: fmt.Sprint("t", i)})
		if err != nil {
			t.Fatalf("first call of tenant %d error = %v", i, err)
		}
		done()
	}
	if got := l.tenants(); got != 3 {
		t.Errorf("buckets kept = %d, want 3", got)
	}
}

// BenchmarkAdmit is the cost every call pays under the bound.
func BenchmarkAdmit(b *testing.B) {
	l := New(Config{MaxInflight: 1 << 20, TenantRate: 1e9, TenantBurst: 1 << 30}, WithMetrics(observe.NewMetrics()))
	req := &idemv1.ReserveRequest{Tenant: "bench"}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			done, err := l.Admit(ctx, "/idem.v1.IdempotencyService/Reserve", req)
			if err != nil {
				b.Fatal(err)
			}
			done()
		}
	})
}

// BenchmarkRefuse is the cost of refusing a call over the bound.
func BenchmarkRefuse(b *testing.B) {
	l := New(Config{MaxInflight: 1}, WithMetrics(observe.NewMetrics()))
	if _, err := l.Admit(context.Background(), "/m", nil); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Admit(context.Background(), "/m", nil); err == nil {
			b.Fatal("admitted over the bound")
		}
	}
}

func TestRegisterFlags(t *testing.T) {
	fs := flag.NewFlagSet("idemd", flag.ContinueOnError)
	c := DefaultConfig()
	RegisterFlags(fs, &c)
	if err := fs.Parse([]string{"--max-inflight=10", "--tenant-rate=2.5", "--tenant-burst=4", "--tenant-max-inflight=3", "--max-tenants=7"}); err != nil {
		t.Fatal(err)
	}
	want := Config{MaxInflight: 10, TenantRate: 2.5, TenantBurst: 4, TenantMaxInflight: 3, MaxTenants: 7, RetryAfter: DefaultConfig().RetryAfter}
	if c != want {
		t.Errorf("parsed config = %+v, want %+v", c, want)
	}
}

// A rate above what an int holds must still admit: the default burst,
// ceil(rate), used to overflow to a negative burst that refused every call.
func TestHugeTenantRateAdmits(t *testing.T) {
	l := New(Config{TenantRate: 1e19}, WithClock(clockwork.NewFakeClock()))
	for i := range 3 {
		done, err := l.Admit(context.Background(), "/idem.v1.IdempotencyService/Reserve", &idemv1.ReserveRequest{Tenant: "a"})
		if err != nil {
			d, _ := retryDelay(err)
			t.Fatalf("call %d at rate 1e19 error = %v (RetryInfo %v), want admitted", i, err, d)
		}
		done()
	}
}

// Tenant names reach the limiter before validation, so they can be as long
// as a request: the buckets kept must not hold them whole.
func TestLongTenantNamesAreNotKept(t *testing.T) {
	l := New(Config{TenantRate: 1, MaxTenants: 4}, WithClock(clockwork.NewFakeClock()))
	long := func(i int) string { return fmt.Sprint(i, strings.Repeat("x", 1<<20)) }
	for i := range 4 {
		done, err := l.Admit(context.Background(), "/idem.v1.IdempotencyService/Reserve", &idemv1.ReserveRequest{Tenant: long(i)})
		if err != nil {
			t.Fatalf("first call of tenant %d error = %v", i, err)
		}
		done()
	}
	kept := 0
	for _, k := range l.buckets.Keys() {
		kept += len(k)
	}
	if kept > 4*maxBucketKey {
		t.Errorf("buckets hold %d bytes of tenant names, want at most %d", kept, 4*maxBucketKey)
	}
	// A long name still has its own bucket.
	if _, err := l.Admit(context.Background(), "/idem.v1.IdempotencyService/Reserve", &idemv1.ReserveRequest{Tenant: long(0)}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("second call of a long tenant at rate 1 burst 1 error = %v, want ResourceExhausted", err)
	}
}

// One tenant's calls in flight are bounded apart from the replica's, so a
// tenant whose Reserves wait (or whose store is slow) leaves room for the
// others; a tenant's count goes when its last call ends.
func TestTenantMaxInflight(t *testing.T) {
	reg := observe.NewRegistry()
	l := New(Config{MaxInflight: 10, TenantMaxInflight: 2}, WithClock(clockwork.NewFakeClock()), WithMetrics(reg.Metrics))
	const method = "/idem.v1.IdempotencyService/Reserve"
	admit := func(tenant string) (func(), error) {
		return l.Admit(context.Background(), method, &idemv1.ReserveRequest{Tenant: tenant})
	}
	a1, err := admit("a")
	if err != nil {
		t.Fatal(err)
	}
	a2, err := admit("a")
	if err != nil {
		t.Fatal(err)
	}
	_, err = admit("a")
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("third call of tenant a error = %v, want ResourceExhausted", err)
	}
	if d, ok := retryDelay(err); !ok || d != DefaultConfig().RetryAfter {
		t.Errorf("refusal RetryInfo = %v, %v; want %v", d, ok, DefaultConfig().RetryAfter)
	}
	if !strings.Contains(status.Convert(err).Message(), "tenant has too many calls in flight") {
		t.Errorf("refusal message = %q", status.Convert(err).Message())
	}
	b1, err := admit("b")
	if err != nil {
		t.Fatalf("tenant b while a is at its bound: %v", err)
	}
	if got := l.inflight.Load(); got != 3 {
		t.Errorf("replica in flight = %d, want 3 (the refusal gave its slot back)", got)
	}
	a1()
	a3, err := admit("a")
	if err != nil {
		t.Fatalf("tenant a after one call ended: %v", err)
	}
	for _, done := range []func(){a2, a3, b1} {
		done()
	}
	if n := l.tenantsInFlight(); n != 0 {
		t.Errorf("%d tenants kept after every call ended, want 0", n)
	}
	if got := rejected(t, reg, observe.RejectTenantInflight); got != 1 {
		t.Errorf("idem_rejected_total{reason=tenant_inflight} = %v, want 1", got)
	}
	if err := (Config{TenantMaxInflight: -1}).Validate(); err == nil || !strings.Contains(err.Error(), "--tenant-max-inflight") {
		t.Errorf("Validate(-1) = %v, want an error naming --tenant-max-inflight", err)
	}
	// A burst without a rate would be ignored: no bucket is kept.
	if err := (Config{TenantBurst: 50}).Validate(); err == nil || !strings.Contains(err.Error(), "--tenant-rate") {
		t.Errorf("Validate(burst without rate) = %v, want an error naming --tenant-rate", err)
	}
	if err := (Config{TenantBurst: 50, TenantRate: 10}).Validate(); err != nil {
		t.Errorf("Validate(burst with rate) = %v", err)
	}
}

// A call refused because its tenant has too many calls in flight did no
// work, so it must not spend the tenant's rate: clients retry such a
// refusal after 50 ms, and each retry would otherwise empty the bucket
// the tenant needs once its calls finish.
func TestTenantInflightRefusalKeepsRate(t *testing.T) {
	reg := observe.NewRegistry()
	l := New(Config{TenantRate: 1, TenantBurst: 3, TenantMaxInflight: 1}, WithClock(clockwork.NewFakeClock()), WithMetrics(reg.Metrics))
	const method = "/idem.v1.IdempotencyService/Reserve"
	admit := func() (func(), error) {
		return l.Admit(context.Background(), method, &idemv1.ReserveRequest{Tenant: "a"})
	}
	first, err := admit()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := admit(); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("call %d while tenant a is at its in-flight bound: error = %v, want ResourceExhausted", i+2, err)
		}
	}
	first()
	// Three tokens, one spent: the fake clock never refills the bucket.
	for i := range 2 {
		done, err := admit()
		if err != nil {
			t.Fatalf("call %d after the first ended: error = %v, want admitted (refused calls spent the rate)", i+1, err)
		}
		done()
	}
	if got := rejected(t, reg, observe.RejectRate); got != 0 {
		t.Errorf("idem_rejected_total{reason=rate_limit} = %v, want 0", got)
	}
}
