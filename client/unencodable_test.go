package client_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/idemhq/idem/client"
)

// TestUnencodableResponseNamed: a response protobuf-go refuses to encode
// (a string field holding invalid UTF-8) reaches the caller as gRPC's
// INTERNAL and releases the key. The service's log must say that, not that
// an empty result was "too large", and the size-limit counter must not move.
func TestUnencodableResponseNamed(t *testing.T) {
	ctx := testCtx(t)
	var logs logBuffer
	ts := &testService{unary: func(context.Context, int64, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		return &testgrpc.SimpleResponse{Username: "\xff\xfe"}, nil
	}}
	a := startApp(t, appConfig{ts: ts, opts: []client.InterceptorOption{client.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil)))}})
	for range 2 {
		if _, err, _ := a.call(ctx, "u", unaryReq("x")); status.Code(err) != codes.Internal {
			t.Fatalf("call with an unencodable response: %v, want INTERNAL", err)
		}
	}
	if n := ts.calls.Load(); n != 2 {
		t.Errorf("handler runs = %d, want 2 (the key released)", n)
	}
	if n := a.counters.ResultTooLarge.Load(); n != 0 {
		t.Errorf("ResultTooLarge = %d, want 0: nothing was over the limit", n)
	}
	got := logs.String()
	if strings.Contains(got, "too large") || !strings.Contains(got, "cannot encode") {
		t.Errorf("log = %s\nwant a line saying the response cannot be encoded", got)
	}
}
