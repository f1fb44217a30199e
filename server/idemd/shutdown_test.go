package idemd

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

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
