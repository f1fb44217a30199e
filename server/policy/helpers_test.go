package policy

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/memory"
)

const defaultTestTimeout = 60 * time.Second

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// writePolicy writes a policy file into dir and returns its path.
func writePolicy(t *testing.T, path, text string) {
	t.Helper()
	// Write and rename, as editors and config management do, so a reload
	// never reads half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// logBuffer collects a slog text log safely across goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type fixture struct {
	r      *Resolver
	base   storage.Store
	client idemv1.IdempotencyServiceClient
	admin  idemv1.AdminServiceClient
	conn   *grpc.ClientConn
	logs   *logBuffer
	// stop stops the server and closes the resolver and the base store;
	// also run at cleanup.
	stop func()
}

// serve loads the policy file at path and serves it over bufconn, with
// the resolver's interceptors installed as idemd installs them.
func serve(t *testing.T, path string, lim server.Limits) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	base := memory.New()
	r, err := Load(ctx, Options{Path: path, Limits: lim, Store: base, StoreURL: "memory://", Logger: log})
	if err != nil {
		base.Close()
		t.Fatalf("Load() = %v", err)
	}
	svc, err := server.New(base, server.WithPolicyResolver(r), server.WithLimits(lim), server.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	gs := server.NewGRPCServer(svc, grpc.ChainUnaryInterceptor(r.UnaryServerInterceptor()), grpc.ChainStreamInterceptor(r.StreamServerInterceptor()))
	lis := bufconn.Listen(1 << 20)
	go func() { _ = gs.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			conn.Close()
			svc.Close()
			gs.GracefulStop()
			cctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
			defer cancel()
			if err := r.Close(cctx); err != nil {
				t.Errorf("Resolver.Close() = %v", err)
			}
			base.Close()
		})
	}
	t.Cleanup(stop)
	return &fixture{r: r, base: base, client: idemv1.NewIdempotencyServiceClient(conn), admin: idemv1.NewAdminServiceClient(conn), conn: conn, logs: logs, stop: stop}
}

// reserveComplete reserves key in ns and completes it with body.
func reserveComplete(ctx context.Context, c idemv1.IdempotencyServiceClient, ns, key string, body []byte) error {
	res, err := c.Reserve(ctx, &idemv1.ReserveRequest{Namespace: ns, Key: key, Fingerprint: []byte("fp")})
	if err != nil {
		return err
	}
	_, err = c.Complete(ctx, &idemv1.CompleteRequest{Namespace: ns, Key: key, Token: res.GetRecord().GetToken(),
		Result: &idemv1.Result{Code: 0, Body: body}})
	return err
}

func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

func pebbleURL(dir string) string { return "pebble://" + filepath.ToSlash(dir) }
