package idemd

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server"
	_ "github.com/idemhq/idem/storage/memory"
)

const defaultTestTimeout = 20 * time.Second

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// gate is a test extension: a flag, and an interceptor that holds Reserve
// calls until released, to stand for slow in-flight calls at shutdown.
type gate struct {
	flagSeen *string
	entered  chan struct{}
	release  chan struct{}
	addr     chan string
	limits   server.Limits // seen by the Started hook
}

func (g *gate) RegisterFlags(fs *flag.FlagSet) {
	g.flagSeen = fs.String("gate-name", "", "test flag")
}

func (g *gate) Setup(_ context.Context, s *Setup) error {
	s.UnaryInterceptors = append(s.UnaryInterceptors, func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if info.FullMethod == idemv1.IdempotencyService_Reserve_FullMethodName {
			g.entered <- struct{}{}
			<-g.release
		}
		return h(ctx, req)
	})
	s.Started = append(s.Started, func(svc *server.Service, _ *grpc.Server) {
		g.limits = svc.Limits()
	})
	return nil
}

func serveInBackground(t *testing.T, cfg Config, g *gate) (addr string, stop context.CancelFunc, done <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	h := &addrHandler{addr: g.addr}
	go func() { errc <- Serve(ctx, cfg, slog.New(h), g) }()
	select {
	case addr = <-g.addr:
	case err := <-errc:
		cancel()
		t.Fatalf("Serve() = %v before serving", err)
	case <-time.After(defaultTestTimeout):
		cancel()
		t.Fatal("Serve() did not start")
	}
	return addr, cancel, errc
}

// addrHandler is a slog handler that reports the "idemd serving" address.
type addrHandler struct{ addr chan string }

func (h *addrHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *addrHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *addrHandler) WithGroup(string) slog.Handler            { return h }
func (h *addrHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "idemd serving" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "addr" {
				h.addr <- a.Value.String()
			}
			return true
		})
	}
	return nil
}

func newGate() *gate {
	return &gate{entered: make(chan struct{}, 1), release: make(chan struct{}), addr: make(chan string, 1)}
}

func memoryConfig() Config {
	c := DefaultConfig()
	c.Listen = "127.0.0.1:0"
	c.Store = "memory://"
	return c
}

func dial(t *testing.T, addr string) idemv1.IdempotencyServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return idemv1.NewIdempotencyServiceClient(conn)
}

func TestShutdownDrainsInFlightCalls(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	g := newGate()
	addr, stop, done := serveInBackground(t, memoryConfig(), g)
	c := dial(t, addr)
	callErr := make(chan error, 1)
	go func() {
		_, err := c.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k"})
		callErr <- err
	}()
	<-g.entered
	stop() // as SIGTERM does
	select {
	case err := <-done:
		t.Fatalf("Serve() returned %v with a call in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(g.release)
	if err := <-callErr; err != nil {
		t.Errorf("in-flight Reserve() error = %v, want it to finish during shutdown", err)
	}
	if g.limits.MaxLease != time.Hour {
		t.Errorf("Started hook saw limits %+v, want the configured ones", g.limits)
	}
	if err := <-done; err != nil {
		t.Errorf("Serve() = %v, want nil after a clean shutdown", err)
	}
}

func TestShutdownCutsOffCallsAfterTimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	g := newGate()
	cfg := memoryConfig()
	cfg.ShutdownTimeout = 50 * time.Millisecond
	addr, stop, done := serveInBackground(t, cfg, g)
	c := dial(t, addr)
	callErr := make(chan error, 1)
	go func() {
		_, err := c.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k"})
		callErr <- err
	}()
	<-g.entered
	stop()
	if err := <-callErr; status.Code(err) != codes.Unavailable {
		t.Errorf("cut-off Reserve() error = %v, want Unavailable", err)
	}
	if err := <-done; err != nil {
		t.Errorf("Serve() = %v, want nil", err)
	}
	close(g.release) // lets the handler goroutine end
}

func TestExtensionFlagsComeFromEnv(t *testing.T) {
	g := newGate()
	RegisterExtension(g)
	t.Cleanup(func() {
		extMu.Lock()
		extensions = extensions[:len(extensions)-1]
		extMu.Unlock()
	})
	var stderr lineWriter
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Serve starts and stops at once
	code := Main(ctx, []string{"--store", "memory://", "--listen", "127.0.0.1:0"}, func(k string) (string, bool) {
		if k == "IDEM_GATE_NAME" {
			return "from-env", true
		}
		return "", false
	}, &stderr)
	if code != ExitOK {
		t.Fatalf("Main() = %d, want 0; stderr %q", code, stderr)
	}
	if *g.flagSeen != "from-env" {
		t.Errorf("extension flag = %q, want %q from IDEM_GATE_NAME", *g.flagSeen, "from-env")
	}
}

type lineWriter []byte

func (w *lineWriter) Write(p []byte) (int, error) {
	*w = append(*w, p...)
	return len(p), nil
}

func TestRegisteredCommandRuns(t *testing.T) {
	ran := false
	RegisterCommand("test-migrate", Command{Summary: "test", Run: func(_ context.Context, args []string, _ func(string) (string, bool), _ io.Writer) int {
		ran = len(args) == 1 && args[0] == "--dry-run"
		return 0
	}})
	t.Cleanup(func() {
		cmdMu.Lock()
		delete(commands, "test-migrate")
		cmdMu.Unlock()
	})
	var stderr lineWriter
	if code := Main(context.Background(), []string{"test-migrate", "--dry-run"}, func(string) (string, bool) { return "", false }, &stderr); code != 0 || !ran {
		t.Errorf("Main(test-migrate) = %d, ran %v; want 0 and the command run with its args", code, ran)
	}
}
