package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/idemhq/idem/client"
)

// TestNonUTF8ErrorStored: a deterministic error (NOT_FOUND) must be stored and replayed; one whose
// message is not valid UTF-8 is refused by idem's Complete, the key is left
// IN_PROGRESS, and after the lease the handler runs again.
func TestNonUTF8ErrorStored(t *testing.T) {
	ctx := testCtx(t)
	clk := clockwork.NewFakeClock()
	ts := &testService{unary: func(_ context.Context, n int64, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		return nil, status.Error(codes.NotFound, "no account named \xff\xfe")
	}}
	a := startApp(t, appConfig{ts: ts, idem: idemConfig{clock: clk}, opts: []client.InterceptorOption{
		client.WithWait(0), client.WithLease(2*time.Second, 2*time.Second, 2*time.Second), client.WithoutHeartbeat(),
	}})
	if _, err, _ := a.call(ctx, "u8", unaryReq("x")); status.Code(err) != codes.NotFound {
		t.Fatalf("first call: %v", err)
	}
	_, err, replayed := a.call(ctx, "u8", unaryReq("x"))
	if status.Code(err) != codes.NotFound || !replayed {
		t.Errorf("retry: %v (replayed %v), want NOT_FOUND replayed", err, replayed)
	}
	clk.Advance(3 * time.Second)
	a.call(ctx, "u8", unaryReq("x"))
	if n := ts.calls.Load(); n != 1 {
		t.Errorf("handler runs = %d, want 1 (CompleteFailed=%d)", n, a.counters.CompleteFailed.Load())
	}
}
