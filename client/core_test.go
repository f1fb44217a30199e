package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/sony/gobreaker/v2"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/idemhq/idem/client"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// A BatchReserve of keys completed with large results answers with every
// result: more than gRPC's default 4 MiB a client accepts. Refusing it
// client-side (RESOURCE_EXHAUSTED, retried) loses the reservations the
// first attempt made: the retry finds them IN_PROGRESS.
func TestClientReceivesLargeAnswers(t *testing.T) {
	ctx := testCtx(t)
	ie := startIdem(t, idemConfig{remote: true})
	big := make([]byte, 1000<<10)
	var items []*idemv1.BatchReserveRequest_Item
	for i := range 5 {
		key := fmt.Sprint("big-", i)
		r, err := ie.svc.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: key})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ie.svc.Complete(ctx, &idemv1.CompleteRequest{Namespace: "ns", Key: key, Token: r.GetRecord().GetToken(), Result: &idemv1.Result{Body: big}}); err != nil {
			t.Fatal(err)
		}
		items = append(items, &idemv1.BatchReserveRequest_Item{Key: key})
	}
	items = append(items, &idemv1.BatchReserveRequest_Item{Key: "fresh"})
	resp, err := ie.svc.BatchReserve(ctx, &idemv1.BatchReserveRequest{Namespace: "ns", Items: items})
	if err != nil {
		rec, _ := client.Local(ie.server).Lookup(ctx, &idemv1.LookupRequest{Namespace: "ns", Key: "fresh"})
		t.Fatalf("BatchReserve() error = %v; the fresh key is left %v", err, rec.GetRecord().GetState())
	}
	if got := resp.GetResults()[5].GetOutcome(); got != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
		t.Errorf("fresh key outcome = %v, want RESERVED", got)
	}
}

// idemd asks for a pause (RetryInfo, 1 s by default) longer than the
// caller's deadline: the client must answer at once with idem's error, not
// sleep out the deadline, or fail-open never gets to run the handler and a
// fail-closed caller sees its own deadline instead of UNAVAILABLE.
func TestRetryInfoPastTheDeadline(t *testing.T) {
	f := &flakyIdem{failures: []error{withRetryInfo(codes.Unavailable, time.Second)}}
	c := startFlaky(t, f, client.WithoutBreaker())
	ts := &testService{}
	a := startAppWith(t, appConfig{ts: ts, opts: []client.InterceptorOption{
		client.WithFailOpen(func(string) bool { return true }),
	}}, c)
	ctx, cancel := context.WithTimeout(testCtx(t), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err, _ := a.call(ctx, "k", unaryReq("x")); err != nil {
		t.Errorf("call with idem down and fail-open = %v after %v, want the handler's answer", err, time.Since(start))
	}
	if n := ts.calls.Load(); n != 1 {
		t.Errorf("handler runs = %d, want 1 (fail open)", n)
	}
}

// The breaker fails new work fast while idem looks down. A reservation
// already held must still be completed: a Complete refused by the open
// breaker (without reaching idem) leaves the key IN_PROGRESS, and once the
// lease runs out the caller's retry runs the command again.
func TestBreakerLetsHoldersFinish(t *testing.T) {
	ctx := testCtx(t)
	storeClk := clockwork.NewFakeClock()
	ie := startIdem(t, idemConfig{remote: true, clock: storeClk, clientOpts: []client.Option{
		client.WithRetry(1, 0, 0),
		client.WithBreaker(gobreaker.Settings{Name: "t", Timeout: 300 * time.Millisecond,
			ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= 3 }}),
	}, serverExtra: []grpc.UnaryServerInterceptor{func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if r, ok := req.(*idemv1.ReserveRequest); ok && strings.HasPrefix(r.GetKey(), "down") {
			return nil, status.Error(codes.Unavailable, "store unavailable")
		}
		return h(ctx, req)
	}}})
	entered, unblock := make(chan struct{}), make(chan struct{})
	ts := &testService{unary: func(_ context.Context, n int64, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		if n == 1 {
			close(entered)
			<-unblock
		}
		return &testgrpc.SimpleResponse{Username: fmt.Sprint("run-", n)}, nil
	}}
	a := startAppWith(t, appConfig{ts: ts, opts: []client.InterceptorOption{
		client.WithWait(0), client.WithLease(2*time.Second, 2*time.Second, 2*time.Second), client.WithoutHeartbeat(),
	}}, ie.client)
	done := make(chan error, 1)
	go func() {
		_, err, _ := a.call(ctx, "cmd", unaryReq("x"))
		done <- err
	}()
	<-entered
	for i := range 3 { // other calls find idem down: the breaker opens
		if _, err, _ := a.call(ctx, fmt.Sprint("down-", i), unaryReq("x")); status.Code(err) != codes.Unavailable {
			t.Fatalf("call with idem down = %v, want UNAVAILABLE", err)
		}
	}
	close(unblock)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	rec, err := client.Local(ie.server).Lookup(ctx, &idemv1.LookupRequest{Namespace: "/grpc.testing.TestService/UnaryCall", Key: "cmd"})
	if err != nil || rec.GetRecord().GetState() != idemv1.RecordState_RECORD_STATE_COMPLETED {
		t.Errorf("record after the handler returned = %v, %v; want COMPLETED (Complete failed %d)", rec.GetRecord().GetState(), err, a.counters.CompleteFailed.Load())
	}
	storeClk.Advance(3 * time.Second)  // past the lease
	time.Sleep(350 * time.Millisecond) // past the breaker's timeout
	a.call(ctx, "cmd", unaryReq("x"))
	if n := ts.calls.Load(); n != 1 {
		t.Errorf("handler runs = %d, want 1", n)
	}
}

// A nil request with the client's default namespace is sent as an empty
// request with that namespace, as gRPC sends a nil request empty, instead
// of panicking.
func TestNilRequestTakesDefaults(t *testing.T) {
	e := startIdem(t, idemConfig{remote: true, clientOpts: []client.Option{client.WithNamespace("ns")}})
	_, err := e.client.Reserve(context.Background(), nil)
	if !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("Reserve(nil) error = %v, want ErrInvalidArgument (the key is missing)", err)
	}
	if !strings.Contains(err.Error(), "key") || strings.Contains(err.Error(), "namespace") {
		t.Errorf("Reserve(nil) error = %v, want only the key named", err)
	}
}

// RESOURCE_EXHAUSTED is retried only when idemd sheds load (it sends
// RetryInfo); gRPC's own, for a message over a size limit, would fail the
// same way on every attempt.
func TestResourceExhaustedRetriedOnlyWithRetryInfo(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		calls int64
	}{
		{"without RetryInfo", status.Error(codes.ResourceExhausted, "grpc: received message larger than max"), 1},
		{"with RetryInfo", statusWithRetry(codes.ResourceExhausted, time.Millisecond), 3},
	} {
		e := startIdem(t, idemConfig{remote: true,
			clientOpts: []client.Option{client.WithRetry(3, time.Millisecond, 10*time.Millisecond), client.WithoutBreaker()},
			serverExtra: []grpc.UnaryServerInterceptor{func(context.Context, any, *grpc.UnaryServerInfo, grpc.UnaryHandler) (any, error) {
				return nil, tc.err
			}}})
		_, _ = e.client.Reserve(testCtx(t), &idemv1.ReserveRequest{Namespace: "ns", Key: "k"})
		if n := e.reserves.Load(); n != tc.calls {
			t.Errorf("%s: idemd saw %d Reserves, want %d", tc.name, n, tc.calls)
		}
	}
}

func statusWithRetry(c codes.Code, d time.Duration) error {
	st, err := status.New(c, "shedding load").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
	if err != nil {
		panic(err)
	}
	return st.Err()
}
