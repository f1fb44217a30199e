package idemd

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// slowFlush is an extension whose shutdown (a span flush to a collector
// that is down) takes as long as it is allowed to.
type slowFlush struct{}

func (slowFlush) RegisterFlags(*flag.FlagSet) {}
func (slowFlush) Setup(_ context.Context, s *Setup) error {
	s.Shutdown = append(s.Shutdown, func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	})
	return nil
}

// The shutdown timeout bounds the whole shutdown, not each step: with a
// call that never ends and a slow extension, idemd still exits about
// ShutdownTimeout after the signal (deploy/ sets the pod's grace period
// from it), not twice that.
func TestShutdownTimeoutBoundsWholeShutdown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	g := newGate()
	cfg := memoryConfig()
	cfg.ShutdownTimeout = 3 * time.Second
	sctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- Serve(sctx, cfg, slog.New(&addrHandler{addr: g.addr}), g, slowFlush{}) }()
	addr := <-g.addr
	go func() { _, _ = dial(t, addr).Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k"}) }()
	<-g.entered
	start := time.Now()
	stop()
	<-done
	close(g.release)
	// Before the fix it took at least 2*ShutdownTimeout+stuckHandlerGrace
	// (7 s); the slack is for a loaded machine.
	limit := cfg.ShutdownTimeout + 2*stuckHandlerGrace + 1500*time.Millisecond
	if el := time.Since(start); el > limit {
		t.Errorf("Serve() returned %v after shutdown began, want at most %v", el.Round(time.Millisecond), limit)
	}
}

// A second SIGTERM during the drain cuts in-flight calls off at once (an
// operator's second ^C) instead of waiting out the shutdown timeout.
func TestSecondSignalCutsDrainShort(t *testing.T) {
	// While this is registered, a SIGTERM does not kill the test binary,
	// whether it comes before Serve listens for it or after.
	sigs := make(chan os.Signal, 64)
	signal.Notify(sigs, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	g := newGate()
	cfg := memoryConfig()
	cfg.ShutdownTimeout = time.Minute
	sctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- Serve(sctx, cfg, slog.New(&addrHandler{addr: g.addr}), g) }()
	addr := <-g.addr
	go func() { _, _ = dial(t, addr).Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k"}) }()
	<-g.entered
	stop() // the first signal: main cancels Serve's context
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			close(g.release)
			if err != nil {
				t.Errorf("Serve() = %v, want nil", err)
			}
			return
		case <-tick.C:
			if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
		case <-ctx.Done():
			close(g.release)
			<-done
			t.Fatalf("Serve() still draining %v after the first signal, with second ones sent every 50 ms", defaultTestTimeout)
		}
	}
}

// With --shutdown-delay, a SIGTERM first turns health NOT_SERVING while
// idemd goes on answering new calls, for load balancers that learn of the
// stop a moment later; a second signal ends the delay.
func TestShutdownDelayServesWhileNotServing(t *testing.T) {
	sigs := make(chan os.Signal, 64)
	signal.Notify(sigs, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	g := newGate()
	cfg := memoryConfig()
	cfg.ShutdownDelay = maxShutdownDelay
	sctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- Serve(sctx, cfg, slog.New(&addrHandler{addr: g.addr})) }()
	addr := <-g.addr
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	stop()
	for {
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("Serve() = %v before the delay ended", err)
		case <-ctx.Done():
			t.Fatalf("health never turned NOT_SERVING after the signal (last %v, %v)", r.GetStatus(), err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	// A new connection and a new call are still served.
	resp, err := dial(t, addr).Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "during-delay"})
	if err != nil || resp.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
		t.Fatalf("Reserve during the delay = %v, %v; want RESERVED", resp.GetOutcome(), err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve() = %v, want nil", err)
		}
	case <-ctx.Done():
		t.Fatal("a second signal did not end the delay")
	}
}

func TestShutdownDelayBounds(t *testing.T) {
	for _, d := range []time.Duration{-time.Second, 6 * time.Minute} {
		c := memoryConfig()
		c.ShutdownDelay = d
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--shutdown-delay") {
			t.Errorf("Validate() with --shutdown-delay %v = %v, want an error naming it", d, err)
		}
	}
}
