package client_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/idemhq/idem/client"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage"
)

// TestReviewZeroLeaseTakesNamespaceDefault: WithLease(0, max, 0) asks for
// no lease of its own on a call without a deadline. The heartbeat ticked at
// half of zero, and NewTicker's panic in its goroutine killed the process;
// it must take the lease idem granted instead. Run in a child process, as
// the failure is a crash.
func TestReviewZeroLeaseTakesNamespaceDefault(t *testing.T) {
	if os.Getenv("IDEM_REVIEW_ZERO_LEASE_CHILD") == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestReviewZeroLeaseTakesNamespaceDefault$", "-test.count=1")
		cmd.Env = append(os.Environ(), "IDEM_REVIEW_ZERO_LEASE_CHILD=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child process failed: %v\n%s", err, out)
		}
		return
	}
	a := startApp(t, appConfig{opts: []client.InterceptorOption{client.WithLease(0, time.Minute, 0)}})
	// No deadline: the lease is the default, here zero.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 2 {
		if _, err, _ := a.call(ctx, "zero-lease", unaryReq("x")); err != nil {
			t.Fatalf("call = %v", err)
		}
	}
	if n := a.ts.calls.Load(); n != 1 {
		t.Errorf("handler runs = %d, want 1", n)
	}
}

// TestReviewCompleteRefusedBySizeReleasesKey: a result idemd cannot even
// read (gRPC's RESOURCE_EXHAUSTED, WithMaxResultSize raised past what
// idemd reads) is refused for good like one idemd names too large: the key
// must be released, not held until its lease ends while retries wait.
func TestReviewCompleteRefusedBySizeReleasesKey(t *testing.T) {
	ctx := testCtx(t)
	svc, store := limitedIdem(t, server.DefaultLimits(), true)
	body := bytes.Repeat([]byte{'x'}, 5<<20)
	ts := &testService{unary: func(context.Context, int64, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		return &testgrpc.SimpleResponse{Payload: &testgrpc.Payload{Body: body}}, nil
	}}
	a := startAppWith(t, appConfig{ts: ts, opts: []client.InterceptorOption{client.WithMaxResultSize(16 << 20)}}, svc)
	resp, err := a.tc.UnaryCall(client.WithKey(ctx, "huge"), unaryReq("x"), grpc.MaxCallRecvMsgSize(64<<20))
	if err != nil || len(resp.GetPayload().GetBody()) != len(body) {
		t.Fatalf("call = %d bytes, %v", len(resp.GetPayload().GetBody()), err)
	}
	rec, err := store.Lookup(ctx, storage.ID{Tenant: server.DefaultTenant, Namespace: testgrpc.TestService_UnaryCall_FullMethodName, Key: "huge"})
	if err != nil || rec.State != storage.StateReleased {
		t.Errorf("record after a Complete refused by size = %v, %v; want RELEASED", rec.State, err)
	}
}

// TestReviewStoredContextErrorReplaysItsCode: a handler error wrapping a
// context error reaches the caller as DEADLINE_EXCEEDED (gRPC's
// FromContextError); stored (the code configured cacheable), its replay
// must carry that code, not UNKNOWN.
func TestReviewStoredContextErrorReplaysItsCode(t *testing.T) {
	ctx := testCtx(t)
	ts := &testService{unary: func(context.Context, int64, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		return nil, fmt.Errorf("ledger: %w", context.DeadlineExceeded)
	}}
	a := startApp(t, appConfig{ts: ts, opts: []client.InterceptorOption{client.WithTransientCodes(codes.Unavailable)}})
	_, first, _ := a.call(ctx, "ctx-err", unaryReq("x"))
	_, again, replayed := a.call(ctx, "ctx-err", unaryReq("x"))
	if !replayed {
		t.Fatalf("second call not replayed: %v", again)
	}
	if status.Code(first) != codes.DeadlineExceeded || status.Code(again) != status.Code(first) {
		t.Errorf("replayed code = %v, first call's = %v; want both DEADLINE_EXCEEDED", status.Code(again), status.Code(first))
	}
	if status.Convert(again).Message() != status.Convert(first).Message() {
		t.Errorf("replayed message = %q, want %q", status.Convert(again).Message(), status.Convert(first).Message())
	}
}

// TestReviewReplayKeepsHeadersAndTrailers: the handler's header and
// trailer metadata are part of its answer (a resource id in a trailer, a
// binary header); a replay that drops them answers differently from the
// first call.
func TestReviewReplayKeepsHeadersAndTrailers(t *testing.T) {
	for _, fail := range []bool{false, true} {
		t.Run(fmt.Sprintf("error=%v", fail), func(t *testing.T) {
			ctx := testCtx(t)
			ts := &testService{unary: func(ctx context.Context, n int64, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
				_ = grpc.SetHeader(ctx, metadata.Pairs("x-run", fmt.Sprint(n), "x-raw-bin", string([]byte{0xff, 0x00, 0x80})))
				_ = grpc.SetTrailer(ctx, metadata.Pairs("x-charge-id", fmt.Sprintf("ch_%d", n)))
				if fail {
					return nil, status.Error(codes.FailedPrecondition, "card declined")
				}
				return &testgrpc.SimpleResponse{Payload: &testgrpc.Payload{Body: []byte("ok")}}, nil
			}}
			a := startApp(t, appConfig{ts: ts})
			call := func() (metadata.MD, metadata.MD, error) {
				var hdr, tlr metadata.MD
				_, err := a.tc.UnaryCall(client.WithKey(ctx, "md"), unaryReq("x"), grpc.Header(&hdr), grpc.Trailer(&tlr))
				return hdr, tlr, err
			}
			h1, t1, err1 := call()
			h2, t2, err2 := call()
			if status.Code(err1) != status.Code(err2) {
				t.Fatalf("errors = %v then %v", err1, err2)
			}
			if got := h2.Get(client.ReplayedHeader); len(got) != 1 || got[0] != "true" {
				t.Fatalf("second call not replayed: header %v", h2)
			}
			for _, k := range []string{"x-run", "x-raw-bin"} {
				if !slices.Equal(h2.Get(k), h1.Get(k)) || len(h1.Get(k)) != 1 {
					t.Errorf("replayed header %s = %q, first call's = %q", k, h2.Get(k), h1.Get(k))
				}
			}
			if !slices.Equal(t2.Get("x-charge-id"), t1.Get("x-charge-id")) || len(t1.Get("x-charge-id")) != 1 {
				t.Errorf("replayed trailer x-charge-id = %q, first call's = %q", t2.Get("x-charge-id"), t1.Get("x-charge-id"))
			}
			if n := ts.calls.Load(); n != 1 {
				t.Errorf("handler runs = %d, want 1", n)
			}
		})
	}
}
