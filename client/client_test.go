package client_test

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/retry"
	"github.com/jonboulle/clockwork"
	"github.com/sony/gobreaker/v2"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/idemhq/idem/client"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

func TestErrorContract(t *testing.T) {
	for _, remote := range []bool{false, true} {
		name := "local"
		if remote {
			name = "remote"
		}
		t.Run(name, func(t *testing.T) {
			ctx := testCtx(t)
			ie := startIdem(t, idemConfig{remote: remote})
			resp, err := ie.svc.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k", Fingerprint: []byte("f")})
			if err != nil || resp.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
				t.Fatalf("Reserve() = %v, %v; want RESERVED", resp, err)
			}
			cancelled, cancel := context.WithCancel(ctx)
			cancel()
			expired, cancel2 := context.WithDeadline(ctx, time.Now().Add(-time.Second))
			defer cancel2()
			tests := []struct {
				name string
				ctx  context.Context
				call func(ctx context.Context) error
				want error
				text string
			}{
				{"not found", ctx, func(ctx context.Context) error {
					_, err := ie.svc.Lookup(ctx, &idemv1.LookupRequest{Namespace: "ns", Key: "absent"})
					return err
				}, client.ErrNotFound, ""},
				{"lease lost", ctx, func(ctx context.Context) error {
					_, err := ie.svc.Complete(ctx, &idemv1.CompleteRequest{Namespace: "ns", Key: "k", Token: 7, Result: &idemv1.Result{}})
					return err
				}, client.ErrLeaseLost, "token"},
				{"invalid argument", ctx, func(ctx context.Context) error {
					_, err := ie.svc.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns"})
					return err
				}, client.ErrInvalidArgument, "key"},
				{"caller cancelled", cancelled, func(ctx context.Context) error {
					_, err := ie.svc.Lookup(ctx, &idemv1.LookupRequest{Namespace: "ns", Key: "k"})
					return err
				}, context.Canceled, ""},
				{"caller deadline", expired, func(ctx context.Context) error {
					_, err := ie.svc.Lookup(ctx, &idemv1.LookupRequest{Namespace: "ns", Key: "k"})
					return err
				}, context.DeadlineExceeded, ""},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					err := tt.call(tt.ctx)
					if !errors.Is(err, tt.want) {
						t.Fatalf("error = %v, want errors.Is %v", err, tt.want)
					}
					if tt.ctx.Err() != nil && err != tt.ctx.Err() {
						t.Errorf("error = %#v, want ctx.Err() itself", err)
					}
					if !strings.Contains(err.Error(), tt.text) || !strings.HasPrefix(err.Error(), "idem: ") && tt.ctx.Err() == nil {
						t.Errorf("error text %q, want it to keep the status message (%q)", err, tt.text)
					}
				})
			}
		})
	}
}

// flakyIdem is an idem that fails Reserve with the given statuses first.
type flakyIdem struct {
	idemv1.UnimplementedIdempotencyServiceServer
	mu       sync.Mutex
	failures []error
	calls    atomic.Int64
}

func (f *flakyIdem) Reserve(context.Context, *idemv1.ReserveRequest) (*idemv1.ReserveResponse, error) {
	f.calls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.failures) > 0 {
		err := f.failures[0]
		if len(f.failures) > 1 {
			f.failures = f.failures[1:]
		}
		if err != nil {
			return nil, err
		}
	}
	return &idemv1.ReserveResponse{Outcome: idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED, Record: &idemv1.Record{Token: 1}}, nil
}

func withRetryInfo(c codes.Code, d time.Duration) error {
	st, _ := status.New(c, "try later").WithDetails(protoadapt.MessageV1Of(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)}))
	return st.Err()
}

func startFlaky(t *testing.T, f *flakyIdem, opts ...client.Option) *client.Client {
	t.Helper()
	l := listen(t, false)
	gs := grpc.NewServer()
	idemv1.RegisterIdempotencyServiceServer(gs, f)
	serve(t, l, gs)
	c, err := client.New(l.target, append([]client.Option{client.WithInsecure(), client.WithDialOptions(l.dial...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestClientRetries(t *testing.T) {
	tests := []struct {
		name     string
		failures []error
		wantErr  error
		calls    int64
	}{
		{"unavailable then ok", []error{withRetryInfo(codes.Unavailable, time.Millisecond), status.Error(codes.Unavailable, "down"), nil}, nil, 3},
		{"resource exhausted then ok", []error{withRetryInfo(codes.ResourceExhausted, time.Millisecond), nil}, nil, 2},
		{"gives up", []error{status.Error(codes.Unavailable, "down")}, client.ErrUnavailable, 4},
		{"not retried", []error{status.Error(codes.FailedPrecondition, "no")}, client.ErrLeaseLost, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			f := &flakyIdem{failures: tt.failures}
			c := startFlaky(t, f, client.WithRetry(4, time.Millisecond, 5*time.Millisecond), client.WithoutBreaker())
			_, err := c.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k"})
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Errorf("Reserve() error = %v, want %v", err, tt.wantErr)
			}
			if got := f.calls.Load(); got != tt.calls {
				t.Errorf("attempts = %d, want %d", got, tt.calls)
			}
		})
	}
}

// The server asks for a pause longer than the default backoff
// (milliseconds): RetryInfo wins. A pause past the caller's deadline is not
// taken; the caller gets idem's error at once, not its own deadline.
func TestClientRetryHonoursRetryInfo(t *testing.T) {
	f := &flakyIdem{failures: []error{withRetryInfo(codes.Unavailable, 200*time.Millisecond), nil}}
	c := startFlaky(t, f, client.WithRetry(5, time.Millisecond, 5*time.Millisecond), client.WithoutBreaker())
	start := time.Now()
	if _, err := c.Reserve(testCtx(t), &idemv1.ReserveRequest{Namespace: "ns", Key: "k"}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("retried after %v, want at least the RetryInfo delay", d)
	}

	f = &flakyIdem{failures: []error{withRetryInfo(codes.Unavailable, time.Hour)}}
	c = startFlaky(t, f, client.WithRetry(5, time.Millisecond, 5*time.Millisecond), client.WithoutBreaker())
	ctx, cancel := context.WithTimeout(testCtx(t), 300*time.Millisecond)
	defer cancel()
	_, err := c.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k"})
	var e *client.Error
	if !errors.As(err, &e) || !errors.Is(err, client.ErrUnavailable) || e.RetryDelay != time.Hour || ctx.Err() != nil {
		t.Errorf("Reserve() error = %v (ctx %v), want idem's UNAVAILABLE with its RetryInfo before the deadline", err, ctx.Err())
	}
	if got := f.calls.Load(); got != 1 {
		t.Errorf("attempts = %d, want 1 (waiting out RetryInfo)", got)
	}
}

func TestClientBreakerFailsFast(t *testing.T) {
	ctx := testCtx(t)
	f := &flakyIdem{failures: []error{status.Error(codes.Unavailable, "down")}}
	c := startFlaky(t, f, client.WithRetry(1, 0, 0), client.WithBreaker(gobreaker.Settings{
		Name: "test", Timeout: time.Hour,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= 3 },
	}))
	for range 3 {
		if _, err := c.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k"}); !errors.Is(err, client.ErrUnavailable) {
			t.Fatalf("Reserve() error = %v, want ErrUnavailable", err)
		}
	}
	_, err := c.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k"})
	if !errors.Is(err, client.ErrUnavailable) || !strings.Contains(err.Error(), "circuit breaker open") {
		t.Errorf("Reserve() with the breaker open = %v, want ErrUnavailable from the breaker", err)
	}
	if got := f.calls.Load(); got != 3 {
		t.Errorf("calls reaching idem = %d, want 3", got)
	}
	if status.Code(err) != codes.Unavailable {
		t.Errorf("status code = %v, want UNAVAILABLE", status.Code(err))
	}
}

func TestClientCache(t *testing.T) {
	ctx := testCtx(t)
	clk := clockwork.NewFakeClockAt(time.Now())
	ie := startIdem(t, idemConfig{remote: true, clientOpts: []client.Option{client.WithCache(8), client.WithClock(clk)}})
	reserve := func(fp string) *idemv1.ReserveResponse {
		t.Helper()
		resp, err := ie.client.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k", Fingerprint: []byte(fp), Retention: durationpb.New(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	r := reserve("f")
	if _, err := ie.client.Complete(ctx, &idemv1.CompleteRequest{Namespace: "ns", Key: "k", Token: r.GetRecord().GetToken(),
		Result: &idemv1.Result{Body: []byte("done")}, Retention: durationpb.New(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	before := ie.reserves.Load()
	got := reserve("f")
	if got.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED || string(got.GetRecord().GetResult().GetBody()) != "done" {
		t.Errorf("cached Reserve() = %v, want COMPLETED with the result", got)
	}
	if n := ie.reserves.Load() - before; n != 0 {
		t.Errorf("Reserve RPCs for a cached record = %d, want 0", n)
	}
	got.GetRecord().GetResult().Body = []byte("mutated")
	if again := reserve("f"); string(again.GetRecord().GetResult().GetBody()) != "done" {
		t.Errorf("cache handed out shared state")
	}
	if m := reserve("other"); m.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_MISMATCH {
		t.Errorf("Reserve() with another fingerprint = %v, want MISMATCH from the server", m.GetOutcome())
	}
	before = ie.reserves.Load()
	clk.Advance(2 * time.Hour)
	reserve("f")
	if n := ie.reserves.Load() - before; n != 1 {
		t.Errorf("Reserve RPCs after expiry = %d, want 1", n)
	}
}

func TestClientDefaultsAndBearer(t *testing.T) {
	ctx := testCtx(t)
	var auth atomic.Value
	ie := startIdem(t, idemConfig{remote: true, clientOpts: []client.Option{
		client.WithTenant("acme"), client.WithNamespace("orders"), client.WithBearerToken("s3cret"),
	}, serverExtra: []grpc.UnaryServerInterceptor{func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		auth.Store(strings.Join(md.Get("authorization"), ","))
		return h(ctx, req)
	}}})
	req := &idemv1.ReserveRequest{Key: "k"}
	resp, err := ie.client.Reserve(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if rec := resp.GetRecord(); rec.GetTenant() != "acme" || rec.GetNamespace() != "orders" {
		t.Errorf("record tenant/namespace = %q/%q, want acme/orders", rec.GetTenant(), rec.GetNamespace())
	}
	if !proto.Equal(req, &idemv1.ReserveRequest{Key: "k"}) {
		t.Errorf("client modified the caller's request: %v", req)
	}
	if got := auth.Load(); got != "Bearer s3cret" {
		t.Errorf("authorization = %q, want Bearer s3cret", got)
	}
}

// The key is chosen once, outside the retry interceptor: every attempt
// carries it.
func TestSameKeyOnEveryRetry(t *testing.T) {
	for _, given := range []string{"", "order-42"} {
		t.Run("key="+given, func(t *testing.T) {
			ctx := testCtx(t)
			var mu sync.Mutex
			var keys []string
			ts := &testService{unary: func(ctx context.Context, n int64, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
				md, _ := metadata.FromIncomingContext(ctx)
				mu.Lock()
				keys = append(keys, md.Get(client.MetadataKey)...)
				mu.Unlock()
				if n < 3 {
					return nil, status.Error(codes.Unavailable, "flaky")
				}
				return &testgrpc.SimpleResponse{}, nil
			}}
			l := listen(t, false)
			gs := grpc.NewServer()
			testgrpc.RegisterTestServiceServer(gs, ts)
			serve(t, l, gs)
			conn, err := grpc.NewClient(l.target, append(l.dial,
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithChainUnaryInterceptor(
					client.UnaryClientInterceptor(),
					retry.UnaryClientInterceptor(retry.WithMax(5), retry.WithCodes(codes.Unavailable), retry.WithBackoff(retry.BackoffLinear(time.Millisecond))),
				))...)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			cctx := ctx
			if given != "" {
				cctx = client.WithKey(ctx, given)
			}
			if _, err := testgrpc.NewTestServiceClient(conn).UnaryCall(cctx, unaryReq("x")); err != nil {
				t.Fatal(err)
			}
			if len(keys) != 3 || keys[0] != keys[1] || keys[1] != keys[2] {
				t.Fatalf("keys per attempt = %v, want the same key three times", keys)
			}
			if given != "" && keys[0] != given {
				t.Errorf("key = %q, want %q from WithKey", keys[0], given)
			}
			if given == "" {
				if u, err := uuid.Parse(keys[0]); err != nil || u.Version() != 7 {
					t.Errorf("generated key %q is not a UUIDv7 (%v)", keys[0], err)
				}
			}
		})
	}
}

// The client (and its interceptors) must not drag storage or a database
// driver into services that use it.
func TestNoStorageDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/idemhq/idem/client").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "database/sql" { // database/sql/driver (interfaces only, via uuid) is fine
			t.Errorf("client depends on %s", dep)
		}
		for _, bad := range []string{"github.com/idemhq/idem/storage", "github.com/idemhq/idem/server", "pgx", "go-redis", "pebble", "lib/pq", "sqlite", "nats", "kafka", "cockroach"} {
			if strings.Contains(dep, bad) {
				t.Errorf("client depends on %s", dep)
			}
		}
	}
}

func TestSameKeyOnEveryStreamRetry(t *testing.T) {
	ctx := testCtx(t)
	var mu sync.Mutex
	var keys []string
	ts := &testService{output: func(n int64, _ *testgrpc.StreamingOutputCallRequest, ss grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
		md, _ := metadata.FromIncomingContext(ss.Context())
		mu.Lock()
		keys = append(keys, md.Get(client.MetadataKey)...)
		mu.Unlock()
		if n < 3 {
			return status.Error(codes.Unavailable, "flaky")
		}
		return ss.Send(&testgrpc.StreamingOutputCallResponse{})
	}}
	l := listen(t, false)
	gs := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(gs, ts)
	serve(t, l, gs)
	conn, err := grpc.NewClient(l.target, append(l.dial,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainStreamInterceptor(
			client.StreamClientInterceptor(),
			retry.StreamClientInterceptor(retry.WithMax(5), retry.WithCodes(codes.Unavailable), retry.WithBackoff(retry.BackoffLinear(time.Millisecond))),
		))...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s, err := testgrpc.NewTestServiceClient(conn).StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 || keys[0] != keys[1] || keys[1] != keys[2] {
		t.Errorf("keys per attempt = %v, want the same key three times", keys)
	}
}
