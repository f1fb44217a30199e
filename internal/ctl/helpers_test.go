package ctl

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/metadata"

	"github.com/idemhq/idem"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage/memory"
)

const defaultTestTimeout = 30 * time.Second

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// startServer runs the real idem service over a memory store on a loopback
// TCP port and returns its address.
func startServer(t *testing.T, opts ...server.Option) string {
	t.Helper()
	addr, _ := startServerOn(t, opts...)
	return addr
}

// startServerOn is startServer that also returns the store, for tests that
// check what a call left in it.
func startServerOn(t *testing.T, opts ...server.Option) (string, *memory.Store) {
	t.Helper()
	store := memory.New()
	opts = append([]server.Option{server.WithLogger(slog.New(slog.DiscardHandler))}, opts...)
	svc, err := server.New(store, opts...)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := server.NewGRPCServer(svc)
	var wg sync.WaitGroup
	wg.Go(func() { _ = gs.Serve(lis) })
	t.Cleanup(func() {
		gs.Stop()
		wg.Wait()
		svc.Close()
		store.Close()
	})
	return lis.Addr().String(), store
}

// bearerTenant accepts only "Bearer good" and maps it to tenant "acme".
func bearerTenant(ctx context.Context, requested string) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if a := md.Get("authorization"); len(a) != 1 || a[0] != "Bearer good" {
		return "", fmt.Errorf("%w: unknown token", idem.ErrUnauthenticated)
	}
	if requested != "" && requested != "acme" {
		return "", fmt.Errorf("%w: tenant %q", idem.ErrPermissionDenied, requested)
	}
	return "acme", nil
}

// closedAddr is a loopback address nobody listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs idemctl in-process.
func run(ctx context.Context, t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(ctx, args, Env{Stdout: &out, Stderr: &errb, LookupEnv: func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}})
	return result{code, out.String(), errb.String()}
}

// mustRun runs idemctl and fails the test unless it exits 0.
func mustRun(ctx context.Context, t *testing.T, addr string, args ...string) string {
	t.Helper()
	r := run(ctx, t, nil, append([]string{"--addr", addr}, args...)...)
	if r.code != 0 {
		t.Fatalf("idemctl %s: exit %d, stderr %q", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

func newTestFlagSet(g *globals) *flag.FlagSet {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	g.register(fs)
	return fs
}
