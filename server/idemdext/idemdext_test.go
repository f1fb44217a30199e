package idemdext

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/idemhq/idem/server/auth"
	"github.com/idemhq/idem/server/idemd"
	"github.com/idemhq/idem/server/observe"
)

func setupWith(t *testing.T, args []string, s *idemd.Setup) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel) // ends the credentials watcher
	e := New()
	fs := flag.NewFlagSet("idemd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	e.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return e.Setup(ctx, s)
}

func newSetup(level slog.Level) *idemd.Setup {
	cfg := idemd.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	return &idemd.Setup{Config: cfg, Logger: slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: level}))}
}

func TestSetupChain(t *testing.T) {
	tokens := filepath.Join(t.TempDir(), "tokens")
	_, line, err := auth.MintToken("acme", auth.RoleClient, time.Time{}, "api")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokens, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		args        []string
		level       slog.Level
		metrics     bool
		wantUnary   int // auth, audit, limits (+ call log) (+ service metrics)
		wantStream  int // auth, limits (+ call log)
		wantOptions int // stats handler with the call log
		wantTenant  bool
	}{
		{"defaults", nil, slog.LevelInfo, false, 3, 2, 0, false},
		{"metrics on", nil, slog.LevelInfo, true, 4, 2, 0, false},
		{"call log", []string{"--log-calls"}, slog.LevelInfo, false, 4, 3, 1, false},
		{"debug level logs calls", nil, slog.LevelDebug, true, 5, 3, 1, false},
		{"tokens", []string{"--tokens-file", tokens}, slog.LevelInfo, false, 3, 2, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSetup(tt.level)
			if tt.metrics {
				s.Observe = observe.NewRegistry()
				s.Metrics = s.Observe.Registry
			}
			if err := setupWith(t, tt.args, s); err != nil {
				t.Fatalf("Setup() error = %v", err)
			}
			if len(s.UnaryInterceptors) != tt.wantUnary || len(s.StreamInterceptors) != tt.wantStream || len(s.ServerOptions) != tt.wantOptions {
				t.Errorf("unary, stream interceptors and server options = %d, %d, %d; want %d, %d, %d",
					len(s.UnaryInterceptors), len(s.StreamInterceptors), len(s.ServerOptions), tt.wantUnary, tt.wantStream, tt.wantOptions)
			}
			if got := len(s.ServiceOptions) == 1; got != tt.wantTenant {
				t.Errorf("tenant function installed = %v, want %v", got, tt.wantTenant)
			}
			if len(s.Shutdown) != 1 {
				t.Errorf("%d shutdown hooks, want the tracer's", len(s.Shutdown))
			}
		})
	}
}

func TestSetupRefuses(t *testing.T) {
	tests := []struct {
		name   string
		listen string
		args   []string
		want   string
	}{
		{"plaintext on a reachable address", "0.0.0.0:50051", nil, "without TLS"},
		{"certificate without key", "127.0.0.1:0", []string{"--tls-cert", "cert.pem"}, "--tls-cert and --tls-key"},
		{"missing tokens file", "127.0.0.1:0", []string{"--tokens-file", "/nonexistent/tokens"}, "tokens"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSetup(slog.LevelInfo)
			s.Config.Listen = tt.listen
			err := setupWith(t, tt.args, s)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Setup() error = %v, want one naming %q", err, tt.want)
			}
		})
	}
	s := newSetup(slog.LevelInfo)
	s.Config.Listen = "0.0.0.0:50051"
	if err := setupWith(t, []string{"--insecure"}, s); err != nil {
		t.Errorf("Setup() with --insecure error = %v, want nil", err)
	}
}

// TestBadLimitFlagsRefused: a rate that is not a number refused every call,
// and negative bounds quietly meant "unlimited"; idemd refuses them at
// start instead, naming the flag.
func TestBadLimitFlagsRefused(t *testing.T) {
	for _, tt := range []struct{ arg, flag string }{
		{"--tenant-rate=NaN", "--tenant-rate"},
		{"--tenant-rate=-5", "--tenant-rate"},
		{"--max-inflight=-3", "--max-inflight"},
		{"--tenant-burst=-2", "--tenant-burst"},
	} {
		if err := setupWith(t, []string{tt.arg}, newSetup(slog.LevelInfo)); err == nil || !strings.Contains(err.Error(), tt.flag) {
			t.Errorf("Setup(%s) error = %v, want one naming %s", tt.arg, err, tt.flag)
		}
	}
}
