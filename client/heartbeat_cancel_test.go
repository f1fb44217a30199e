package client_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/idemhq/idem/client"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// TestHeartbeatOutlivesTheCaller: a caller gives up (cancel / deadline) while the handler is still doing
// its side effect. The handler keeps running, so its lease must still be
// extended; otherwise the caller's retry takes the key over and the
// command runs twice.
func TestHeartbeatOutlivesTheCaller(t *testing.T) {
	ctx := testCtx(t)
	storeClk, hbClk := clockwork.NewFakeClock(), clockwork.NewFakeClock()
	entered, sawCancel, unblock := make(chan struct{}), make(chan struct{}), make(chan struct{})
	ts := &testService{unary: func(ctx context.Context, n int64, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		if n == 1 {
			close(entered)
			<-ctx.Done() // the caller gave up...
			close(sawCancel)
			<-unblock // ...but the side effect is already under way and finishes
		}
		return &testgrpc.SimpleResponse{Username: fmt.Sprint("run-", n)}, nil
	}}
	ie := startIdem(t, idemConfig{clock: storeClk})
	rec := &recordingService{Service: ie.svc, extended: make(chan *idemv1.ExtendLeaseResponse, 10)}
	a := startAppWith(t, appConfig{ts: ts, opts: []client.InterceptorOption{
		client.WithHeartbeatClock(hbClk), client.WithWait(0), client.WithLease(2*time.Second, 2*time.Second, 2*time.Second),
	}}, rec)
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = a.tc.UnaryCall(client.WithKey(cctx, "hb-cancel"), unaryReq("x"))
	}()
	<-entered
	if err := hbClk.BlockUntilContext(ctx, 1); err != nil { // heartbeat ticker running
		t.Fatal(err)
	}
	cancel()
	<-sawCancel
	time.Sleep(50 * time.Millisecond)
	storeClk.Advance(1500 * time.Millisecond)
	hbClk.Advance(time.Second) // half the lease: the heartbeat should extend it
	select {
	case <-rec.extended:
	case <-time.After(time.Second):
		t.Fatal("no ExtendLease after the caller cancelled, though the handler still runs")
	}
	storeClk.Advance(time.Second) // past the original lease
	_, err := a.tc.UnaryCall(client.WithKey(ctx, "hb-cancel"), unaryReq("x"))
	if status.Code(err) != codes.Aborted {
		t.Errorf("retry while the first handler still runs: %v, want ABORTED", err)
	}
	close(unblock)
	<-done
	if n := ts.calls.Load(); n != 1 {
		t.Errorf("handler runs = %d, want 1", n)
	}
}
