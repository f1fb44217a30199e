package idemd

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

// serverMaxHeaderList returns the SETTINGS_MAX_HEADER_LIST_SIZE idemd
// announces on a new connection (ok false: not announced).
func serverMaxHeaderList(t *testing.T, addr string) (uint32, bool) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, defaultTestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(defaultTestTimeout))
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading idemd's SETTINGS: %v", err)
		}
		if s, isSettings := f.(*http2.SettingsFrame); isSettings && !s.IsAck() {
			return s.Value(http2.SettingMaxHeaderListSize)
		}
	}
}

// gRPC-go decodes up to 16 MiB of request metadata per stream by default,
// before any interceptor (authentication included) runs, and keeps it while
// the handler waits for the request message. idemd's calls carry a token,
// a trace context and an idempotency key: the bound is announced and a
// call with megabytes of metadata is refused.
func TestRequestMetadataBounded(t *testing.T) {
	addr, stop, done := serveInBackground(t, memoryConfig(), newGate())
	defer func() { stop(); <-done }()

	n, ok := serverMaxHeaderList(t, addr)
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
