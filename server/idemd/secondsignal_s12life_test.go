package idemd

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// A second SIGTERM that arrives during --shutdown-delay cuts the calls still
// running off at once, as it does during the drain (README: "a second
// SIGTERM (or ^C) cuts the calls still running off at once"). It used to
// end only the delay: idemd then waited out the whole --shutdown-timeout
// for the in-flight calls, and took a third signal to stop.
func TestSecondSignalDuringDelayCutsCallsOff(t *testing.T) {
	sigs := make(chan os.Signal, 64)
	signal.Notify(sigs, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	g := newGate()
	cfg := memoryConfig()
	cfg.ShutdownDelay = time.Minute
	cfg.ShutdownTimeout = time.Minute
	sctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- Serve(sctx, cfg, slog.New(&addrHandler{addr: g.addr}), g) }()
	addr := <-g.addr
	released := false
	release := func() {
		if !released {
			released = true
			close(g.release)
		}
	}
	defer release()
	go func() { _, _ = dial(t, addr).Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k"}) }()
	<-g.entered

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	stop() // the first signal
	// NOT_SERVING: the delay has begun, and idemd listens for a second signal.
	for {
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("health never turned NOT_SERVING after the signal (last %v, %v)", r.GetStatus(), err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The held call ignores its context: idemd gives it stuckHandlerGrace.
	limit := stuckHandlerGrace + 3*time.Second
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve() = %v, want nil", err)
		}
	case <-time.After(limit):
		release()
		<-done
		t.Fatalf("Serve() still waiting for the in-flight call %v after a second signal during the delay; want it cut off at once", limit)
	}
}
