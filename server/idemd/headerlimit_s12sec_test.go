package idemd

import (
	"context"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

// gRPC-go decodes up to 16 MiB of request metadata per stream by default,
// before any interceptor (authentication included) runs, and keeps it while
// the handler waits for the request message. idemd's calls carry a token,
// a trace context and an idempotency key: the bound is announced and a
// call with megabytes of metadata is refused.
func TestRequestMetadataBounded(t *testing.T) {
	addr, stop, done := serveInBackground(t, memoryConfig(), newGate())
	defer func() { stop(); <-done }()

	n, ok := serverSetting(t, addr, http2.SettingMaxHeaderListSize)
	if !ok || n > maxHeaderListBytes {
		t.Errorf("SETTINGS_MAX_HEADER_LIST_SIZE = %d (sent %v), want at most %d", n, ok, maxHeaderListBytes)
	}

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	small := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+strings.Repeat("t", 64))
	if _, err := hc.Check(small, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health check with ordinary metadata: %v", err)
	}
	big := metadata.AppendToOutgoingContext(ctx, "x-pad", strings.Repeat("a", 1<<20))
	if _, err := hc.Check(big, &healthpb.HealthCheckRequest{}); err == nil {
		t.Error("health check with 1 MiB of metadata succeeded; want it refused")
	}
}
