package policy

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server/idemd"
	"github.com/idemhq/idem/storage"
)

func TestIdemdRefusesABadPolicy(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		yaml string
		args []string
		want string
	}{
		{"unknown key", "namespaces:\n  a.*:\n    max_lease: 1m\n    lease: 2m\n", nil, "p.yaml:4: \"a.*\": unknown key \"lease\""},
		{"above the global max", "namespaces:\n  a.*:\n    max_lease: 2h\n", []string{"--max-lease", "90m"}, "p.yaml:3: \"a.*\": max_lease 2h0m0s is above the server's --max-lease 1h30m0s"},
		{"unreachable store", "namespaces:\n  a.*:\n    store: redis://127.0.0.1:1/0?dial_timeout=200ms\n", nil, "p.yaml:2: \"a.*\":"},
		{"with --namespace-policy", "namespaces:\n  a.*: {}\n", []string{"--namespace-policy", "x=max-lease=1m"}, "--policy and --namespace-policy cannot be combined"},
		{"negative ping timeout", "namespaces:\n  a.*: {}\n", []string{"--policy-ping-timeout=-1s"}, "--policy-ping-timeout -1s must be positive"},
		{"zero ping timeout", "namespaces:\n  a.*: {}\n", []string{"--policy-ping-timeout=0s"}, "--policy-ping-timeout 0s must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
			defer cancel()
			path := filepath.Join(dir, "p.yaml")
			writePolicy(t, path, tt.yaml)
			var stderr bytes.Buffer
			args := append([]string{"--listen", "127.0.0.1:0", "--store", "memory://", "--policy", path}, tt.args...)
			noEnv := func(string) (string, bool) { return "", false }
			code := idemd.Main(ctx, args, noEnv, &stderr)
			if code != idemd.ExitUsage {
				t.Errorf("idemd exit code = %d, want %d", code, idemd.ExitUsage)
			}
			out := stderr.String()
			if lines := strings.Count(out, "\n"); lines != 1 || !strings.HasPrefix(out, "idemd: ") {
				t.Errorf("stderr = %q, want one line starting \"idemd: \"", out)
			}
			if !strings.Contains(out, tt.want) {
				t.Errorf("stderr = %q, want it to contain %q", out, tt.want)
			}
		})
	}
}

// servingHandler reports idemd's address and whether a reload was logged.
type servingHandler struct {
	addr     chan string
	reloaded chan struct{}
}

func (h *servingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *servingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *servingHandler) WithGroup(string) slog.Handler            { return h }
func (h *servingHandler) Handle(_ context.Context, r slog.Record) error {
	switch r.Message {
	case "idemd serving":
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "addr" {
				h.addr <- a.Value.String()
			}
			return true
		})
	case "policy reloaded":
		h.reloaded <- struct{}{}
	}
	return nil
}

// TestIdemdReloadsOnSIGHUP runs idemd with --policy, rewrites the file and
// sends this process SIGHUP, which the extension catches while serving.
func TestIdemdReloadsOnSIGHUP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	path := filepath.Join(t.TempDir(), "p.yaml")
	writePolicy(t, path, "namespaces:\n  a.*:\n    max_lease: 1m\n")
	c, h, stop := servePolicy(ctx, t, path)
	reserve := func(key string) error {
		_, err := c.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "a.x", Key: key, LeaseTtl: dur(90 * time.Second)})
		return err
	}
	if err := reserve("before"); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Reserve(lease 90s) under max_lease 1m = %v, want InvalidArgument", err)
	}
	writePolicy(t, path, "namespaces:\n  a.*:\n    max_lease: 2m\n")
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.reloaded:
	case <-ctx.Done():
		t.Fatal("no reload logged after SIGHUP")
	}
	if err := reserve("after"); err != nil {
		t.Errorf("Reserve(lease 90s) after reloading max_lease 2m = %v, want success", err)
	}
	stop()
}

// The opens of policyhang:// stores each report that they started, block
// until their context ends, as a SQL store's open retries an unreachable
// server, and report how that context ended.
var (
	hangingStarted = make(chan struct{}, 1)
	hangingOpens   = make(chan error, 1)
)

func init() {
	storage.Register("policyhang", func(ctx context.Context, u *url.URL, _ storage.OpenOptions) (storage.Store, error) {
		hangingStarted <- struct{}{}
		<-ctx.Done()
		hangingOpens <- ctx.Err()
		return nil, errors.New("idem: cannot connect to " + u.Host)
	})
}

// A reload still opening a store when idemd shuts down is abandoned: the
// open's context is canceled, rather than the shutdown waiting out the
// reload's minute, far past --shutdown-timeout.
func TestIdemdShutdownAbandonsReload(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	path := filepath.Join(t.TempDir(), "p.yaml")
	writePolicy(t, path, "namespaces:\n  a.*:\n    max_lease: 1m\n")
	cfg := idemd.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Store = "memory://"
	h := &servingHandler{addr: make(chan string, 1), reloaded: make(chan struct{}, 1)}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- idemd.Serve(sctx, cfg, slog.New(h), &extension{path: path, pingTimeout: time.Second}) }()
	select {
	case <-h.addr:
	case err := <-done:
		t.Fatalf("Serve() = %v before serving", err)
	}
	writePolicy(t, path, "namespaces:\n  a.*:\n    store: policyhang://db\n")
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case <-hangingStarted:
	case <-ctx.Done():
		t.Fatal("no reload opened the store after SIGHUP")
	}
	stop() // while the reload opens the store
	select {
	case err := <-hangingOpens:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the reload's open ended with %v, want it canceled by the shutdown", err)
		}
	case <-ctx.Done():
		t.Fatal("the reload's open was still running long after the shutdown began")
	}
	if err := <-done; err != nil {
		t.Errorf("Serve() = %v, want a clean shutdown", err)
	}
}

// servePolicy runs idemd on memory:// with the policy file at path and
// returns a client of it, its log handler, and stop, which shuts it down
// and fails t unless the shutdown is clean.
func servePolicy(ctx context.Context, t *testing.T, path string) (idemv1.IdempotencyServiceClient, *servingHandler, func()) {
	t.Helper()
	cfg := idemd.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Store = "memory://"
	h := &servingHandler{addr: make(chan string, 1), reloaded: make(chan struct{}, 1)}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- idemd.Serve(sctx, cfg, slog.New(h), &extension{path: path, pingTimeout: time.Second}) }()
	var addr string
	select {
	case addr = <-h.addr:
	case err := <-done:
		cancel()
		t.Fatalf("Serve() = %v before serving", err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	stop := func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve() = %v, want a clean shutdown", err)
		}
	}
	return idemv1.NewIdempotencyServiceClient(conn), h, stop
}
