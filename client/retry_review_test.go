package client_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/idemhq/idem/client"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// failAfterOnce runs each listed method's handler and then, the first time,
// answers UNAVAILABLE anyway: the call took effect but its answer was lost,
// as when idemd's store timeout ends a write the store committed.
func failAfterOnce(methods ...string) grpc.UnaryServerInterceptor {
	var mu sync.Mutex
	failed := map[string]bool{}
	want := map[string]bool{}
	for _, m := range methods {
		want[m] = true
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(ctx, req)
		mu.Lock()
		defer mu.Unlock()
		if err == nil && want[info.FullMethod] && !failed[info.FullMethod] {
			failed[info.FullMethod] = true
			return nil, status.Error(codes.Unavailable, "answer lost")
		}
		return resp, err
	}
}

func TestReviewRetriedHolderCallsStillSucceed(t *testing.T) {
	ctx := testCtx(t)
	ie := startIdem(t, idemConfig{remote: true,
		clientOpts: []client.Option{client.WithRetry(3, time.Millisecond, time.Millisecond)},
		serverExtra: []grpc.UnaryServerInterceptor{failAfterOnce(
			idemv1.IdempotencyService_Complete_FullMethodName,
			idemv1.IdempotencyService_Release_FullMethodName,
			idemv1.IdempotencyService_ExtendLease_FullMethodName,
			idemv1.IdempotencyService_Checkpoint_FullMethodName,
			idemv1.IdempotencyService_BatchComplete_FullMethodName,
		)}})
	c := ie.client
	reserve := func(key string) uint64 {
		t.Helper()
		r, err := c.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: key, Fingerprint: []byte("f")})
		if err != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
			t.Fatalf("Reserve(%s) = %v, %v", key, r, err)
		}
		return r.GetRecord().GetToken()
	}
	tok := reserve("a")
	if _, err := c.Checkpoint(ctx, &idemv1.CheckpointRequest{Namespace: "ns", Key: "a", Token: tok, Phase: "p", Data: []byte("d")}); err != nil {
		t.Errorf("retried Checkpoint() = %v", err)
	}
	if _, err := c.ExtendLease(ctx, &idemv1.ExtendLeaseRequest{Namespace: "ns", Key: "a", Token: tok}); err != nil {
		t.Errorf("retried ExtendLease() = %v", err)
	}
	res := &idemv1.Result{Code: 3, Message: "m", Body: []byte("b"), Metadata: map[string]string{"x": "1", "y": "2"}}
	if _, err := c.Complete(ctx, &idemv1.CompleteRequest{Namespace: "ns", Key: "a", Token: tok, Result: res}); err != nil {
		t.Errorf("retried Complete() = %v", err)
	}
	tok = reserve("b")
	if _, err := c.Release(ctx, &idemv1.ReleaseRequest{Namespace: "ns", Key: "b", Token: tok}); err != nil {
		t.Errorf("retried Release() = %v", err)
	}
	tok = reserve("c")
	resp, err := c.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: "ns", Items: []*idemv1.BatchCompleteRequest_Item{{Key: "c", Token: tok, Result: res}}})
	if err != nil || resp.GetResults()[0].GetError() != nil {
		t.Errorf("retried BatchComplete() = %v, %v", resp, err)
	}
}
