package client_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/idemhq/idem/client"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// hangingExtendService reserves every key; its first ExtendLease hangs
// until its context ends (a black-holed connection), later ones answer.
type hangingExtendService struct {
	client.Service // nil: the interceptor needs only the methods below
	extends        atomic.Int64
	firstEnded     chan struct{}
	answered       chan struct{}
	answerOnce     sync.Once
}

func (s *hangingExtendService) Reserve(_ context.Context, req *idemv1.ReserveRequest) (*idemv1.ReserveResponse, error) {
	return &idemv1.ReserveResponse{Outcome: idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED, Record: &idemv1.Record{
		Token: 7, LeaseExpiresAt: timestamppb.New(time.Now().Add(req.GetLeaseTtl().AsDuration())),
	}}, nil
}

func (s *hangingExtendService) ExtendLease(ctx context.Context, _ *idemv1.ExtendLeaseRequest) (*idemv1.ExtendLeaseResponse, error) {
	if s.extends.Add(1) == 1 {
		<-ctx.Done()
		close(s.firstEnded)
		return nil, ctx.Err()
	}
	s.answerOnce.Do(func() { close(s.answered) })
	return &idemv1.ExtendLeaseResponse{}, nil
}

func (s *hangingExtendService) Complete(context.Context, *idemv1.CompleteRequest) (*idemv1.CompleteResponse, error) {
	return &idemv1.CompleteResponse{}, nil
}

func (s *hangingExtendService) Release(context.Context, *idemv1.ReleaseRequest) (*idemv1.ReleaseResponse, error) {
	return &idemv1.ReleaseResponse{}, nil
}

// TestHeartbeatBoundsEachExtend: an ExtendLease that hangs must not hold
// up the ticks after it, or the lease lapses while the handler runs and a
// retry takes the key over. The timed-out extend is not a lost lease, so
// the handler keeps running.
func TestHeartbeatBoundsEachExtend(t *testing.T) {
	const backstop = 10 * time.Second
	ctx := testCtx(t)
	svc := &hangingExtendService{firstEnded: make(chan struct{}), answered: make(chan struct{})}
	entered, unblock := make(chan struct{}), make(chan struct{})
	var unblockOnce sync.Once
	t.Cleanup(func() { unblockOnce.Do(func() { close(unblock) }) }) // never leave the handler hanging
	handlerErr := make(chan error, 1)
	ts := &testService{unary: func(ctx context.Context, _ int64, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		close(entered)
		<-unblock
		handlerErr <- context.Cause(ctx)
		return &testgrpc.SimpleResponse{Username: "done"}, nil
	}}
	a := startAppWith(t, appConfig{ts: ts, opts: []client.InterceptorOption{
		client.WithLease(200*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond),
	}}, svc)
	done := make(chan error, 1)
	go func() {
		_, err := a.tc.UnaryCall(client.WithKey(ctx, "hb-bound"), unaryReq("x"))
		done <- err
	}()
	<-entered
	for _, w := range []struct {
		ch   chan struct{}
		what string
	}{
		{svc.firstEnded, "the hung ExtendLease was never given up"},
		{svc.answered, "no ExtendLease after the hung one"},
	} {
		select {
		case <-w.ch:
		case <-time.After(backstop):
			t.Fatal(w.what)
		}
	}
	unblockOnce.Do(func() { close(unblock) })
	if err := <-done; err != nil {
		t.Errorf("call = %v, want success", err)
	}
	if err := <-handlerErr; err != nil {
		t.Errorf("handler's context ended (%v) after a timed-out extend; want it running", err)
	}
}
