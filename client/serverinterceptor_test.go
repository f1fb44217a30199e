package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

	"github.com/idemhq/idem/client"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage/memory"
)

var transports = []struct {
	name string
	cfg  func(appConfig) appConfig
}{
	{"bufconn/local", func(c appConfig) appConfig { return c }},
	{"tcp/remote", func(c appConfig) appConfig { c.tcp, c.idem.tcp, c.idem.remote = true, true, true; return c }},
}

func reasonOf(err error) string {
	for _, d := range status.Convert(err).Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return ei.GetReason()
		}
	}
	return ""
}

func retryDelayOf(err error) (time.Duration, bool) {
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}

func TestUnaryReplay(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			ctx := testCtx(t)
			a := startApp(t, tr.cfg(appConfig{}))
			first, err, replayed := a.call(ctx, "k1", unaryReq("charge 10"))
			if err != nil || replayed {
				t.Fatalf("first call = %q, %v, replayed %v; want a fresh answer", first, err, replayed)
			}
			for i := range 3 {
				got, err, replayed := a.call(ctx, "k1", unaryReq("charge 10"))
				if err != nil || got != first || !replayed {
					t.Fatalf("retry %d = %q, %v, replayed %v; want %q replayed", i, got, err, replayed, first)
				}
			}
			if n := a.ts.calls.Load(); n != 1 {
				t.Errorf("handler ran %d times, want 1", n)
			}
			other, err, _ := a.call(ctx, "k2", unaryReq("charge 10"))
			if err != nil || other == first {
				t.Errorf("another key = %q, %v; want a new answer", other, err)
			}
			if got := a.counters.Replayed.Load(); got != 3 {
				t.Errorf("Replayed counter = %d, want 3", got)
			}
		})
	}
}

func TestTokenInHandlerContext(t *testing.T) {
	ctx := testCtx(t)
	ts := &testService{unary: func(ctx context.Context, n int64, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		tok, ok := client.TokenFromContext(ctx)
		if !ok {
			return nil, status.Error(codes.Internal, "no token")
		}
		if n == 1 {
			return nil, status.Error(codes.Unavailable, "try again") // released: the next attempt takes over
		}
		return &testgrpc.SimpleResponse{Username: fmt.Sprint(tok)}, nil
	}}
	a := startApp(t, appConfig{ts: ts})
	if _, err, _ := a.call(ctx, "tok", unaryReq("x")); status.Code(err) != codes.Unavailable {
		t.Fatalf("first call error = %v, want UNAVAILABLE", err)
	}
	resp, err := a.tc.UnaryCall(client.WithKey(ctx, "tok"), unaryReq("x"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := resp.GetUsername(), "2"; got != want {
		t.Errorf("token in handler = %s, want %s (takeover after release)", got, want)
	}
}

func TestErrorReplay(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			ctx := testCtx(t)
			ts := &testService{unary: func(_ context.Context, n int64, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
				st, _ := status.New(codes.InvalidArgument, fmt.Sprintf("card declined (run %d)", n)).WithDetails(
					protoadapt.MessageV1Of(&errdetails.ErrorInfo{Reason: "CARD_DECLINED", Domain: "payments.example"}))
				return nil, st.Err()
			}}
			a := startApp(t, tr.cfg(appConfig{ts: ts}))
			_, err1, _ := a.call(ctx, "e1", unaryReq("x"))
			_, err2, replayed := a.call(ctx, "e1", unaryReq("x"))
			if !replayed {
				t.Errorf("second call not marked replayed")
			}
			s1, s2 := status.Convert(err1), status.Convert(err2)
			if s1.Code() != codes.InvalidArgument || s2.Code() != s1.Code() || s2.Message() != s1.Message() {
				t.Errorf("replayed error = %v, want %v", err2, err1)
			}
			if got := reasonOf(err2); got != "CARD_DECLINED" {
				t.Errorf("replayed ErrorInfo reason = %q, want CARD_DECLINED", got)
			}
			if n := a.ts.calls.Load(); n != 1 {
				t.Errorf("handler ran %d times, want 1", n)
			}
		})
	}
}

func TestTransientCodesRelease(t *testing.T) {
	tests := []struct {
		name  string
		code  codes.Code
		opts  []client.InterceptorOption
		runs  int64 // handler runs for three calls
		final codes.Code
	}{
		{"unavailable released", codes.Unavailable, nil, 3, codes.Unavailable},
		{"internal released", codes.Internal, nil, 3, codes.Internal},
		{"not found stored", codes.NotFound, nil, 1, codes.NotFound},
		{"configured: unavailable stored", codes.Unavailable, []client.InterceptorOption{client.WithTransientCodes(codes.Aborted)}, 1, codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			ts := &testService{unary: func(context.Context, int64, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
				return nil, status.Error(tt.code, "failed")
			}}
			a := startApp(t, appConfig{ts: ts, opts: tt.opts})
			var err error
			for range 3 {
				_, err, _ = a.call(ctx, "t", unaryReq("x"))
			}
			if status.Code(err) != tt.final {
				t.Errorf("last error = %v, want %v", err, tt.final)
			}
			if got := a.ts.calls.Load(); got != tt.runs {
				t.Errorf("handler runs = %d, want %d", got, tt.runs)
			}
		})
	}
}

func TestResultOverLimit(t *testing.T) {
	ctx := testCtx(t)
	big := make([]byte, 4096)
	ts := &testService{unary: func(context.Context, int64, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		return &testgrpc.SimpleResponse{Payload: &testgrpc.Payload{Body: big}}, nil
	}}
	a := startApp(t, appConfig{ts: ts, opts: []client.InterceptorOption{client.WithMaxResultSize(1024)}})
	for i := range 2 {
		got, err, replayed := a.call(ctx, "big", unaryReq("x"))
		if err != nil || len(got) != len(big) || replayed {
			t.Fatalf("call %d = %d bytes, %v, replayed %v; want the handler's %d bytes", i, len(got), err, replayed, len(big))
		}
	}
	if n := a.ts.calls.Load(); n != 2 {
		t.Errorf("handler runs = %d, want 2 (not cached)", n)
	}
	if n := a.counters.ResultTooLarge.Load(); n != 2 {
		t.Errorf("ResultTooLarge = %d, want 2", n)
	}
}

func TestKeyReusedWithDifferentRequest(t *testing.T) {
	ctx := testCtx(t)
	a := startApp(t, appConfig{})
	if _, err, _ := a.call(ctx, "same", unaryReq("charge 10")); err != nil {
		t.Fatal(err)
	}
	_, err, _ := a.call(ctx, "same", unaryReq("charge 99"))
	if status.Code(err) != codes.FailedPrecondition || reasonOf(err) != client.ReasonKeyReused {
		t.Errorf("reused key error = %v (reason %q), want FAILED_PRECONDITION/%s", err, reasonOf(err), client.ReasonKeyReused)
	}
	if n := a.ts.calls.Load(); n != 1 {
		t.Errorf("handler runs = %d, want 1", n)
	}
}

func TestFingerprintExclude(t *testing.T) {
	ctx := testCtx(t)
	a := startApp(t, appConfig{opts: []client.InterceptorOption{
		client.WithFingerprintExclude("grpc.testing.SimpleRequest.fill_username", "grpc.testing.Payload.type"),
	}})
	r1 := unaryReq("x")
	r2 := unaryReq("x")
	r2.FillUsername, r2.Payload.Type = true, testgrpc.PayloadType(1)
	first, err, _ := a.call(ctx, "ex", r1)
	if err != nil {
		t.Fatal(err)
	}
	got, err, replayed := a.call(ctx, "ex", r2)
	if err != nil || got != first || !replayed {
		t.Errorf("call differing only in excluded fields = %q, %v, replayed %v; want %q replayed", got, err, replayed, first)
	}
	if r2.FillUsername != true {
		t.Errorf("the interceptor modified the request")
	}
	r3 := unaryReq("y")
	if _, err, _ := a.call(ctx, "ex", r3); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("call differing in an included field: error = %v, want FAILED_PRECONDITION", err)
	}
}

func TestKeyMissing(t *testing.T) {
	tests := []struct {
		name string
		opts []client.InterceptorOption
		want codes.Code
	}{
		{"required", nil, codes.InvalidArgument},
		{"optional", []client.InterceptorOption{client.WithKeyOptional(func(m string) bool { return m == "/grpc.testing.TestService/UnaryCall" })}, codes.OK},
		{"not selected", []client.InterceptorOption{client.WithSelector(func(context.Context, string) bool { return false })}, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			a := startApp(t, appConfig{noKeys: true, opts: tt.opts})
			_, err := a.tc.UnaryCall(ctx, unaryReq("x"))
			if status.Code(err) != tt.want {
				t.Fatalf("call without key: %v, want %v", err, tt.want)
			}
			if tt.want == codes.InvalidArgument && reasonOf(err) != client.ReasonKeyMissing {
				t.Errorf("reason = %q, want %s", reasonOf(err), client.ReasonKeyMissing)
			}
		})
	}
}

func TestDeclaredIdempotentMethodsPassThrough(t *testing.T) {
	ctx := testCtx(t)
	ie := startIdem(t, idemConfig{})
	icpt := client.UnaryServerInterceptor(ie.svc)
	tests := []struct {
		method string
		want   codes.Code
	}{
		{"/idem.v1.IdempotencyService/Lookup", codes.OK},               // NO_SIDE_EFFECTS
		{"/idem.v1.IdempotencyService/Reserve", codes.InvalidArgument}, // no level: needs a key
		{"/no.such.Service/Method", codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			ran := false
			_, err := icpt(ctx, &idemv1.LookupRequest{}, &grpc.UnaryServerInfo{FullMethod: tt.method}, func(context.Context, any) (any, error) {
				ran = true
				return &idemv1.LookupResponse{}, nil
			})
			if status.Code(err) != tt.want || ran != (tt.want == codes.OK) {
				t.Errorf("call without key: err %v, handler ran %v; want %v", err, ran, tt.want)
			}
		})
	}
}

func TestIdemUnreachable(t *testing.T) {
	tests := []struct {
		name     string
		failOpen bool
		want     codes.Code
		runs     int64
	}{
		{"fail closed", false, codes.Unavailable, 0},
		{"fail open", true, codes.OK, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			// An idem address nothing listens on.
			l := listen(t, true)
			target := l.target
			l.Close()
			down, err := client.New(target, client.WithInsecure(), client.WithRetry(1, 0, 0))
			if err != nil {
				t.Fatal(err)
			}
			defer down.Close()
			ts := &testService{}
			opts := []client.InterceptorOption{client.WithFailOpen(func(string) bool { return tt.failOpen })}
			a := startAppWith(t, appConfig{ts: ts, opts: opts}, down)
			_, err, _ = a.call(ctx, "u", unaryReq("x"))
			if status.Code(err) != tt.want {
				t.Errorf("call with idem down: %v, want %v", err, tt.want)
			}
			if tt.want == codes.Unavailable {
				if _, ok := retryDelayOf(err); !ok {
					t.Errorf("UNAVAILABLE without RetryInfo")
				}
			}
			if got := ts.calls.Load(); got != tt.runs {
				t.Errorf("handler runs = %d, want %d", got, tt.runs)
			}
			if got := a.counters.FailOpen.Load(); got != tt.runs {
				t.Errorf("FailOpen counter = %d, want %d", got, tt.runs)
			}
		})
	}
}

func TestHandlerPanicReleasesKey(t *testing.T) {
	ctx := testCtx(t)
	ts := &testService{unary: func(_ context.Context, n int64, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		if n == 1 {
			panic("boom")
		}
		return &testgrpc.SimpleResponse{Username: "ok"}, nil
	}}
	a := startApp(t, appConfig{ts: ts})
	if _, err, _ := a.call(ctx, "p", unaryReq("x")); status.Code(err) != codes.Internal {
		t.Fatalf("panicking call: %v, want INTERNAL from the recovery interceptor", err)
	}
	resp, err := a.tc.UnaryCall(client.WithKey(ctx, "p"), unaryReq("x"))
	if err != nil || resp.GetUsername() != "ok" {
		t.Fatalf("retry after panic = %v, %v; want the handler to run again", resp, err)
	}
	if n := ts.calls.Load(); n != 2 {
		t.Errorf("handler runs = %d, want 2", n)
	}
}

func TestInProgressDuplicate(t *testing.T) {
	ctx := testCtx(t)
	entered, unblock := make(chan struct{}), make(chan struct{})
	ts := &testService{unary: func(_ context.Context, n int64, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		if n == 1 {
			close(entered)
			<-unblock
		}
		return &testgrpc.SimpleResponse{Username: fmt.Sprint("run-", n)}, nil
	}}
	a := startApp(t, appConfig{ts: ts, opts: []client.InterceptorOption{client.WithWait(0)}})
	first := make(chan string, 1)
	go func() {
		got, _, _ := a.call(ctx, "ip", unaryReq("x"))
		first <- got
	}()
	<-entered
	_, err, _ := a.call(ctx, "ip", unaryReq("x"))
	if status.Code(err) != codes.Aborted {
		t.Errorf("duplicate while in flight: %v, want ABORTED", err)
	}
	if d, ok := retryDelayOf(err); !ok || d <= 0 {
		t.Errorf("ABORTED RetryInfo = %v, %v; want a positive delay", d, ok)
	}
	close(unblock)
	<-first
	if n := ts.calls.Load(); n != 1 {
		t.Errorf("handler runs = %d, want 1", n)
	}
}

func TestInProgressWaitThenReplay(t *testing.T) {
	ctx := testCtx(t)
	entered, unblock := make(chan struct{}), make(chan struct{})
	ts := &testService{unary: func(_ context.Context, n int64, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		if n == 1 {
			close(entered)
			<-unblock
		}
		return &testgrpc.SimpleResponse{Username: fmt.Sprint("run-", n)}, nil
	}}
	a := startApp(t, appConfig{ts: ts, opts: []client.InterceptorOption{client.WithWait(10 * time.Second)}})
	first := make(chan error, 1)
	go func() {
		_, err := a.tc.UnaryCall(client.WithKey(ctx, "w"), unaryReq("x"))
		first <- err
	}()
	<-entered
	second := make(chan *testgrpc.SimpleResponse, 1)
	go func() {
		resp, err := a.tc.UnaryCall(client.WithKey(ctx, "w"), unaryReq("x"))
		if err != nil {
			t.Errorf("waiting duplicate: %v", err)
		}
		second <- resp
	}()
	close(unblock) // whether the duplicate is waiting yet or not, it must see the completed result
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if got := (<-second).GetUsername(); got != "run-1" {
		t.Errorf("duplicate answer = %q, want run-1", got)
	}
}

// A handler that outlives its lease with heartbeats off: another attempt
// takes over and wins; the late Complete is refused with LEASE_LOST and
// reported, while its caller still gets its own answer.
func TestLeaseTakeoverLateComplete(t *testing.T) {
	ctx := testCtx(t)
	clk := clockwork.NewFakeClock()
	entered, unblock := make(chan struct{}), make(chan struct{})
	ts := &testService{unary: func(_ context.Context, n int64, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		if n == 1 {
			close(entered)
			<-unblock
		}
		return &testgrpc.SimpleResponse{Username: fmt.Sprint("run-", n)}, nil
	}}
	a := startApp(t, appConfig{ts: ts, idem: idemConfig{clock: clk}, opts: []client.InterceptorOption{
		client.WithoutHeartbeat(), client.WithWait(0), client.WithLease(2*time.Second, 2*time.Second, 2*time.Second),
	}})
	first := make(chan string, 1)
	go func() {
		got, err, _ := a.call(ctx, "lease", unaryReq("x"))
		if err != nil {
			t.Errorf("late caller: %v", err)
		}
		first <- got
	}()
	<-entered
	clk.Advance(3 * time.Second) // the first attempt's lease ran out
	var hdr metadata.MD
	resp, err := a.tc.UnaryCall(client.WithKey(ctx, "lease"), unaryReq("x"), grpc.Header(&hdr))
	if err != nil || resp.GetUsername() != "run-2" || len(hdr.Get(client.ReplayedHeader)) > 0 {
		t.Fatalf("after the lease ran out = %v, %v; want the takeover to run the handler (run-2)", resp, err)
	}
	close(unblock)
	<-first
	var ev client.Event
	for ev = range a.events {
		if ev.Kind == client.EventCompleteFailed {
			break
		}
	}
	if !errors.Is(ev.Err, client.ErrLeaseLost) {
		t.Errorf("late Complete reported %v, want ErrLeaseLost", ev.Err)
	}
	if n := a.counters.CompleteFailed.Load(); n != 1 {
		t.Errorf("CompleteFailed = %d, want 1", n)
	}
	resp, err = a.tc.UnaryCall(client.WithKey(ctx, "lease"), unaryReq("x"))
	if err != nil || resp.GetUsername() != "run-2" {
		t.Errorf("after the late Complete = %v, %v; want the takeover's run-2", resp, err)
	}
}

// recordingService counts ExtendLease calls on their way to idem.
type recordingService struct {
	client.Service
	extended chan *idemv1.ExtendLeaseResponse
	reserves atomic.Int64
}

func (r *recordingService) Reserve(ctx context.Context, req *idemv1.ReserveRequest) (*idemv1.ReserveResponse, error) {
	r.reserves.Add(1)
	return r.Service.Reserve(ctx, req)
}

func (r *recordingService) ExtendLease(ctx context.Context, req *idemv1.ExtendLeaseRequest) (*idemv1.ExtendLeaseResponse, error) {
	resp, err := r.Service.ExtendLease(ctx, req)
	if err == nil {
		r.extended <- resp
	}
	return resp, err
}

func TestHeartbeatKeepsLease(t *testing.T) {
	ctx := testCtx(t)
	storeClk, hbClk := clockwork.NewFakeClock(), clockwork.NewFakeClock()
	entered, unblock := make(chan struct{}), make(chan struct{})
	ts := &testService{unary: func(_ context.Context, n int64, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		if n == 1 {
			close(entered)
			<-unblock
		}
		return &testgrpc.SimpleResponse{Username: fmt.Sprint("run-", n)}, nil
	}}
	ie := startIdem(t, idemConfig{clock: storeClk})
	rec := &recordingService{Service: ie.svc, extended: make(chan *idemv1.ExtendLeaseResponse, 10)}
	a := startAppWith(t, appConfig{ts: ts, opts: []client.InterceptorOption{
		client.WithHeartbeatClock(hbClk), client.WithWait(0), client.WithLease(2*time.Second, 2*time.Second, 2*time.Second),
	}}, rec)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := a.tc.UnaryCall(client.WithKey(ctx, "hb"), unaryReq("x")); err != nil {
			t.Errorf("long call: %v", err)
		}
	}()
	<-entered
	storeClk.Advance(1500 * time.Millisecond)
	if err := hbClk.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	hbClk.Advance(time.Second) // half the lease
	resp := <-rec.extended
	if got, want := resp.GetRecord().GetLeaseExpiresAt().AsTime(), storeClk.Now().Add(2*time.Second); !got.Equal(want) {
		t.Errorf("lease after heartbeat ends %v, want %v", got, want)
	}
	storeClk.Advance(time.Second) // past the original lease, within the extended one
	_, err := a.tc.UnaryCall(client.WithKey(ctx, "hb"), unaryReq("x"))
	if status.Code(err) != codes.Aborted {
		t.Errorf("duplicate while the heartbeat holds the lease: %v, want ABORTED", err)
	}
	close(unblock)
	<-done
	if n := ts.calls.Load(); n != 1 {
		t.Errorf("handler runs = %d, want 1", n)
	}
}

func TestServerStreamReplay(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			ctx := testCtx(t)
			a := startApp(t, tr.cfg(appConfig{}))
			req := &testgrpc.StreamingOutputCallRequest{ResponseParameters: make([]*testgrpc.ResponseParameters, 3)}
			for i := range req.ResponseParameters {
				req.ResponseParameters[i] = &testgrpc.ResponseParameters{Size: 1}
			}
			recv := func() ([]string, bool) {
				s, err := a.tc.StreamingOutputCall(client.WithKey(ctx, "s1"), req)
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for {
					m, err := s.Recv()
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					got = append(got, string(m.GetPayload().GetBody()))
				}
				hdr, _ := s.Header()
				return got, slices.Equal(hdr.Get(client.ReplayedHeader), []string{"true"})
			}
			first, rep1 := recv()
			second, rep2 := recv()
			want := []string{"run-1-msg-0", "run-1-msg-1", "run-1-msg-2"}
			if !slices.Equal(first, want) || rep1 {
				t.Errorf("first stream = %v (replayed %v), want %v fresh", first, rep1, want)
			}
			if !slices.Equal(second, want) || !rep2 {
				t.Errorf("second stream = %v (replayed %v), want %v replayed", second, rep2, want)
			}
			if n := a.ts.calls.Load(); n != 1 {
				t.Errorf("handler runs = %d, want 1", n)
			}
		})
	}
}

func TestServerStreamErrorAndOverflow(t *testing.T) {
	ctx := testCtx(t)
	ts := &testService{output: func(n int64, req *testgrpc.StreamingOutputCallRequest, ss grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
		for i := range req.GetResponseParameters() {
			if err := ss.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: fmt.Appendf(nil, "%d-%d", n, i)}}); err != nil {
				return err
			}
		}
		return status.Errorf(codes.OutOfRange, "ended at run %d", n)
	}}
	a := startApp(t, appConfig{ts: ts, opts: []client.InterceptorOption{client.WithMaxStreamMessages(2)}})
	run := func(key string, msgs int) ([]string, error) {
		req := &testgrpc.StreamingOutputCallRequest{ResponseParameters: make([]*testgrpc.ResponseParameters, msgs)}
		s, err := a.tc.StreamingOutputCall(client.WithKey(ctx, key), req)
		if err != nil {
			return nil, err
		}
		var got []string
		for {
			m, err := s.Recv()
			if err != nil {
				return got, err
			}
			got = append(got, string(m.GetPayload().GetBody()))
		}
	}
	g1, e1 := run("short", 2)
	g2, e2 := run("short", 2)
	if !slices.Equal(g1, g2) || status.Convert(e1).Message() != status.Convert(e2).Message() || status.Code(e2) != codes.OutOfRange {
		t.Errorf("replayed stream = %v %v, want %v %v", g2, e2, g1, e1)
	}
	g3, _ := run("long", 3)
	g4, _ := run("long", 3)
	if slices.Equal(g3, g4) || len(g4) != 3 {
		t.Errorf("over-limit stream replayed: %v then %v; want two fresh runs", g3, g4)
	}
	if n := a.counters.ResultTooLarge.Load(); n != 2 {
		t.Errorf("ResultTooLarge = %d, want 2", n)
	}
}

func bodyKey(msg any) (string, bool) {
	switch m := msg.(type) {
	case *testgrpc.StreamingInputCallRequest:
		return string(m.GetPayload().GetBody()), m.GetPayload() != nil
	case *testgrpc.StreamingOutputCallRequest:
		return string(m.GetPayload().GetBody()), m.GetPayload() != nil
	}
	return "", false
}

func TestClientStreamDedupePerMessage(t *testing.T) {
	ctx := testCtx(t)
	a := startApp(t, appConfig{opts: []client.InterceptorOption{client.WithStreamMessageKey(bodyKey)}})
	send := func(bodies ...string) int32 {
		s, err := a.tc.StreamingInputCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bodies {
			if err := s.Send(&testgrpc.StreamingInputCallRequest{Payload: &testgrpc.Payload{Body: []byte(b)}}); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := s.CloseAndRecv()
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetAggregatedPayloadSize()
	}
	if got := send("aa", "bbb", "aa"); got != 5 {
		t.Errorf("first stream size = %d, want 5 (duplicate aa skipped)", got)
	}
	if got := send("bbb", "c"); got != 1 {
		t.Errorf("second stream size = %d, want 1 (bbb already processed)", got)
	}
	if got, want := a.ts.seenBodies(), []string{"aa", "bbb", "c"}; !slices.Equal(got, want) {
		t.Errorf("handler saw %v, want %v", got, want)
	}
}

func TestBidiStreamDedupeAndToken(t *testing.T) {
	ctx := testCtx(t)
	a := startApp(t, appConfig{opts: []client.InterceptorOption{client.WithStreamMessageKey(bodyKey)}})
	s, err := a.tc.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range []string{"x", "x", "y"} {
		if err := s.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte(b)}}); err != nil {
			t.Fatal(err)
		}
	}
	s.CloseSend()
	for {
		m, err := s.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(m.GetPayload().GetBody()))
	}
	if want := []string{"x@1", "y@1"}; !slices.Equal(got, want) {
		t.Errorf("bidi answers = %v, want %v", got, want)
	}
}

// The heartbeat learns that another attempt took over (LEASE_LOST) and
// cancels the stale handler, whose context names the cause.
func TestHeartbeatLeaseLostCancelsHandler(t *testing.T) {
	ctx := testCtx(t)
	storeClk, hbClk := clockwork.NewFakeClock(), clockwork.NewFakeClock()
	entered := make(chan struct{})
	cause := make(chan error, 1)
	ts := &testService{unary: func(ctx context.Context, n int64, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		if n == 1 {
			close(entered)
			<-ctx.Done()
			cause <- context.Cause(ctx)
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return &testgrpc.SimpleResponse{Username: fmt.Sprint("run-", n)}, nil
	}}
	a := startApp(t, appConfig{ts: ts, idem: idemConfig{clock: storeClk}, opts: []client.InterceptorOption{
		client.WithHeartbeatClock(hbClk), client.WithWait(0), client.WithLease(2*time.Second, 2*time.Second, 2*time.Second),
	}})
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.call(ctx, "lost", unaryReq("x"))
	}()
	<-entered
	storeClk.Advance(3 * time.Second) // lease gone before any heartbeat
	if got, err, _ := a.call(ctx, "lost", unaryReq("x")); err != nil {
		t.Fatalf("takeover call: %q, %v", got, err)
	}
	if err := hbClk.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	hbClk.Advance(time.Second)
	if err := <-cause; !errors.Is(err, client.ErrLeaseLost) {
		t.Errorf("stale handler's context cause = %v, want ErrLeaseLost", err)
	}
	<-done
	if n := a.counters.HeartbeatFailed.Load(); n != 1 {
		t.Errorf("HeartbeatFailed = %d, want 1", n)
	}
	resp, err := a.tc.UnaryCall(client.WithKey(ctx, "lost"), &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("x")}})
	if err != nil || resp.GetUsername() != "run-2" {
		t.Errorf("after the stale handler ended = %v, %v; want run-2 replayed", resp, err)
	}
}

func TestTenantAndNamespace(t *testing.T) {
	ctx := testCtx(t)
	a := startApp(t, appConfig{opts: []client.InterceptorOption{client.WithTenantName("acme")}})
	if _, err, _ := a.call(ctx, "tn", unaryReq("x")); err != nil {
		t.Fatal(err)
	}
	resp, err := a.idem.svc.Lookup(ctx, &idemv1.LookupRequest{Tenant: "acme", Namespace: "/grpc.testing.TestService/UnaryCall", Key: "tn"})
	if err != nil {
		t.Fatalf("Lookup() of the call's record: %v", err)
	}
	if got := resp.GetRecord().GetState(); got != idemv1.RecordState_RECORD_STATE_COMPLETED {
		t.Errorf("record state = %v, want COMPLETED", got)
	}
}

func TestServerStreamKeyMissingAndPanic(t *testing.T) {
	ctx := testCtx(t)
	ts := &testService{output: func(n int64, _ *testgrpc.StreamingOutputCallRequest, ss grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
		if n == 1 {
			panic("stream boom")
		}
		return ss.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: []byte("ok")}})
	}}
	a := startApp(t, appConfig{ts: ts})
	recv := func(ctx context.Context) (string, error) {
		s, err := a.tc.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{})
		if err != nil {
			return "", err
		}
		m, err := s.Recv()
		return string(m.GetPayload().GetBody()), err
	}
	// The client interceptor adds a key unless one is in the metadata; an
	// empty one counts as missing.
	if _, err := recv(metadata.AppendToOutgoingContext(ctx, client.MetadataKey, "")); status.Code(err) != codes.InvalidArgument || reasonOf(err) != client.ReasonKeyMissing {
		t.Errorf("stream without key: %v, want INVALID_ARGUMENT/%s", err, client.ReasonKeyMissing)
	}
	if _, err := recv(client.WithKey(ctx, "sp")); status.Code(err) != codes.Internal {
		t.Fatalf("panicking stream: %v, want INTERNAL from recovery", err)
	}
	if got, err := recv(client.WithKey(ctx, "sp")); err != nil || got != "ok" {
		t.Errorf("retry after the panic = %q, %v; want the handler to run again", got, err)
	}
}

// TestFailOpenOnlyWhenUnreachable: a fail-open method runs unprotected when
// idem cannot be reached, but not when idem answers and refuses (here a
// credential it does not accept): that would turn deduplication off
// unnoticed.
func TestFailOpenOnlyWhenUnreachable(t *testing.T) {
	ctx := testCtx(t)
	deny := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return nil, status.Error(codes.PermissionDenied, "token not accepted")
	}
	ie := startIdem(t, idemConfig{remote: true, serverExtra: []grpc.UnaryServerInterceptor{deny}})
	ts := &testService{}
	opts := []client.InterceptorOption{client.WithFailOpen(func(string) bool { return true })}
	a := startAppWith(t, appConfig{ts: ts, opts: opts}, ie.svc)
	_, err, _ := a.call(ctx, "u", unaryReq("x"))
	if status.Code(err) != codes.Unavailable {
		t.Errorf("call with idem refusing: %v, want UNAVAILABLE", err)
	}
	if got := ts.calls.Load(); got != 0 {
		t.Errorf("handler runs = %d, want 0", got)
	}
	if got := a.counters.FailOpen.Load(); got != 0 {
		t.Errorf("FailOpen counter = %d, want 0", got)
	}
}

// TestFailOpenWhenStoreClosed: an idemd whose store is closed (a reload
// dropped it, shutdown) answers UNAVAILABLE with reason STORE_CLOSED: that
// is idem unreachable, so a fail-open method runs.
func TestFailOpenWhenStoreClosed(t *testing.T) {
	ctx := testCtx(t)
	ie := startIdem(t, idemConfig{remote: true})
	ie.store.Close()
	ts := &testService{}
	opts := []client.InterceptorOption{client.WithFailOpen(func(string) bool { return true })}
	a := startAppWith(t, appConfig{ts: ts, opts: opts}, ie.svc)
	_, err, _ := a.call(ctx, "u", unaryReq("x"))
	if got := ts.calls.Load(); got != 1 || err != nil {
		t.Errorf("handler runs = %d, err = %v; want the handler to run", got, err)
	}
}

// TestReplayWithoutStoredResponse: in a namespace whose policy keeps only
// outcome codes (store_results: false), a replay of a successful call has
// no response to give. It must say so, not fail as a corrupt record nor
// answer an empty success; a response type without fields replays exactly.
func TestReplayWithoutStoredResponse(t *testing.T) {
	ctx := testCtx(t)
	store := memory.New(memory.WithLogger(quiet))
	t.Cleanup(func() { store.Close() })
	codesOnly := server.Policy{StoreResults: false}
	srv, err := server.New(store, server.WithLogger(quiet), server.WithNamespacePolicies(map[string]server.Policy{
		testgrpc.TestService_UnaryCall_FullMethodName:           codesOnly,
		testgrpc.TestService_StreamingOutputCall_FullMethodName: codesOnly,
		testgrpc.TestService_EmptyCall_FullMethodName:           codesOnly,
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	a := startAppWith(t, appConfig{}, client.Local(srv))
	wantNotStored := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.AlreadyExists || reasonOf(err) != client.ReasonResultNotStored {
			t.Errorf("%s = %v (reason %q), want ALREADY_EXISTS/%s", what, err, reasonOf(err), client.ReasonResultNotStored)
		}
	}

	if _, err, replayed := a.call(ctx, "u1", unaryReq("x")); err != nil || replayed {
		t.Fatalf("first call = %v, replayed %v", err, replayed)
	}
	got, err, replayed := a.call(ctx, "u1", unaryReq("x"))
	if !replayed {
		t.Errorf("retry not replayed (%q, %v)", got, err)
	}
	wantNotStored("unary replay", err)

	req := &testgrpc.StreamingOutputCallRequest{ResponseParameters: []*testgrpc.ResponseParameters{{Size: 1}}}
	recv := func() (int, error) {
		s, err := a.tc.StreamingOutputCall(client.WithKey(ctx, "s1"), req)
		if err != nil {
			return 0, err
		}
		n := 0
		for {
			if _, err := s.Recv(); err == io.EOF {
				return n, nil
			} else if err != nil {
				return n, err
			}
			n++
		}
	}
	if n, err := recv(); n != 1 || err != nil {
		t.Fatalf("first stream = %d messages, %v", n, err)
	}
	n, err := recv()
	if n != 0 {
		t.Errorf("stream replay sent %d messages, want none", n)
	}
	wantNotStored("stream replay", err)
	if runs := a.ts.calls.Load(); runs != 2 {
		t.Errorf("handlers ran %d times, want once per key (2)", runs)
	}

	// A response without fields is all there is to replay.
	intercept := client.UnaryServerInterceptor(client.Local(srv), client.WithLogger(quiet))
	info := &grpc.UnaryServerInfo{FullMethod: testgrpc.TestService_EmptyCall_FullMethodName}
	runs := 0
	h := func(context.Context, any) (any, error) { runs++; return &testgrpc.Empty{}, nil }
	ictx := metadata.NewIncomingContext(ctx, metadata.Pairs(client.MetadataKey, "e1"))
	for i := range 2 {
		resp, err := intercept(ictx, &testgrpc.Empty{}, info, h)
		if _, ok := resp.(*testgrpc.Empty); !ok || err != nil {
			t.Errorf("EmptyCall %d = %T, %v; want *Empty", i, resp, err)
		}
	}
	if runs != 1 {
		t.Errorf("EmptyCall handler ran %d times, want 1", runs)
	}
}

// TestNamespaceMaxLeaseBelowDeadline: a method whose namespace caps leases
// below the lease a long deadline asks for still runs, once, on the
// namespace's default lease, and its heartbeat extends that lease.
func TestNamespaceMaxLeaseBelowDeadline(t *testing.T) {
	store := memory.New(memory.WithLogger(quiet))
	t.Cleanup(func() { store.Close() })
	srv, err := server.New(store, server.WithLogger(quiet), server.WithNamespacePolicies(map[string]server.Policy{
		testgrpc.TestService_UnaryCall_FullMethodName: {DefaultLease: time.Second, MaxLease: 10 * time.Second, StoreResults: true},
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	rs := &recordingService{Service: client.Local(srv), extended: make(chan *idemv1.ExtendLeaseResponse, 10)}
	ts := &testService{unary: func(ctx context.Context, n int64, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		select { // one heartbeat, at half the namespace's 1s lease
		case <-rs.extended:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return &testgrpc.SimpleResponse{Username: fmt.Sprintf("run-%d", n)}, nil
	}}
	a := startAppWith(t, appConfig{ts: ts}, rs)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range 2 {
		got, err, replayed := a.call(ctx, "k", unaryReq("x"))
		if err != nil || replayed != (i > 0) {
			t.Errorf("call %d = %q, %v, replayed %v; want success, replayed on the retry", i, got, err, replayed)
		}
	}
	if n := ts.calls.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
	// Once refused, the method's Reserves name no lease: one Reserve a call.
	before := rs.reserves.Load()
	if _, err, _ := a.call(ctx, "k", unaryReq("x")); err != nil {
		t.Fatal(err)
	}
	if n := rs.reserves.Load() - before; n != 1 {
		t.Errorf("a later call sent %d Reserves, want 1", n)
	}
}

// TestLeaseBelowIdemMinimumIsLogged: WithLease under idem's 1s minimum is
// refused by idem, and the method runs on its namespace's default lease
// (30s here) instead; that happened silently, 60 times the lease asked for.
func TestLeaseBelowIdemMinimumIsLogged(t *testing.T) {
	var logs logBuffer
	svc, _ := limitedIdem(t, server.DefaultLimits(), false)
	ts := &testService{}
	a := startAppWith(t, appConfig{ts: ts, opts: []client.InterceptorOption{
		client.WithLease(200*time.Millisecond, 500*time.Millisecond, 500*time.Millisecond), client.WithoutHeartbeat(),
		client.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))),
	}}, svc)
	ctx := testCtx(t)
	for _, key := range []string{"a", "b"} {
		if _, err, _ := a.call(ctx, key, unaryReq("x")); err != nil {
			t.Fatalf("call %s = %v", key, err)
		}
	}
	var warned int
	for _, l := range logs.lines(t) {
		if l["msg"] == "idem refused the lease; the method uses its namespace's default lease from now on" {
			warned++
			if l["method"] != testgrpc.TestService_UnaryCall_FullMethodName || !strings.Contains(fmt.Sprint(l["err"]), "lease_ttl") {
				t.Errorf("line = %v, want the method and idem's refusal naming lease_ttl", l)
			}
		}
	}
	if warned != 1 {
		t.Errorf("%d lines about the refused lease, want 1: %s", warned, logs.String())
	}
}
