package client_test

import (
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/idemhq/idem/client"
)

// TestServerStreamNonUTF8ErrorStored: as for unary calls, a server stream
// ending in a deterministic error whose message is not valid UTF-8 is
// stored and replayed. idem refuses such a message, which would leave the
// key IN_PROGRESS (retries ABORTED) until the lease ends, then run the
// handler again.
func TestServerStreamNonUTF8ErrorStored(t *testing.T) {
	ctx := testCtx(t)
	ts := &testService{output: func(int64, *testgrpc.StreamingOutputCallRequest, grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
		return status.Error(codes.NotFound, "no account named \xff\xfe")
	}}
	a := startApp(t, appConfig{ts: ts, opts: []client.InterceptorOption{client.WithWait(0)}})
	call := func() (error, bool) {
		var hdr metadata.MD
		s, err := a.tc.StreamingOutputCall(client.WithKey(ctx, "s8"), &testgrpc.StreamingOutputCallRequest{}, grpc.Header(&hdr))
		if err != nil {
			return err, false
		}
		for {
			if _, err = s.Recv(); err != nil {
				break
			}
		}
		return err, len(hdr.Get(client.ReplayedHeader)) > 0
	}
	if err, _ := call(); status.Code(err) != codes.NotFound {
		t.Fatalf("first call: %v", err)
	}
	if err, replayed := call(); status.Code(err) != codes.NotFound || !replayed {
		t.Errorf("retry: %v (replayed %v), want NOT_FOUND replayed", err, replayed)
	}
	if n := ts.calls.Load(); n != 1 {
		t.Errorf("handler runs = %d, want 1 (CompleteFailed=%d)", n, a.counters.CompleteFailed.Load())
	}
}
