package idemdext

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idemhq/idem/server/auth"
)

// warnRecorder keeps the messages of warnings and errors.
type warnRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnRecorder) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w *warnRecorder) WithAttrs([]slog.Attr) slog.Handler           { return w }
func (w *warnRecorder) WithGroup(string) slog.Handler                { return w }
func (w *warnRecorder) Handle(_ context.Context, r slog.Record) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, r.Message)
	return nil
}

func (w *warnRecorder) saysNoAuth() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, m := range w.msgs {
		if strings.Contains(m, "authenticates no one") {
			return true
		}
	}
	return false
}

// Plaintext with --insecure, or TLS alone, on a reachable address lets
// every caller act for any tenant and call the admin API. That is allowed
// (a NetworkPolicy may close the network), but must not be silent.
func TestUnauthenticatedReachableListenerWarns(t *testing.T) {
	tokens := filepath.Join(t.TempDir(), "tokens")
	_, line, err := auth.MintToken("acme", auth.RoleClient, time.Time{}, "api")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokens, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		listen string
		args   []string
		want   bool
	}{
		{"0.0.0.0:50051", []string{"--insecure"}, true},
		{"[::]:50051", []string{"--insecure"}, true},
		{":50051", []string{"--insecure"}, true},
		{"127.0.0.1:50051", nil, false},
		{"[::1]:50051", nil, false},
		{"localhost:50051", nil, false},
		{"unix:/tmp/idemd.sock", nil, false},
		{"0.0.0.0:50051", []string{"--insecure", "--tokens-file", tokens}, false},
	} {
		t.Run(tt.listen+" "+strings.Join(tt.args, " "), func(t *testing.T) {
			w := &warnRecorder{}
			s := newSetup(slog.LevelInfo)
			s.Logger = slog.New(w)
			s.Config.Listen = tt.listen
			if err := setupWith(t, tt.args, s); err != nil {
				t.Fatal(err)
			}
			if got := w.saysNoAuth(); got != tt.want {
				t.Errorf("warned that idemd authenticates no one: %v, want %v (warnings %q)", got, tt.want, w.msgs)
			}
		})
	}
}

// The refusal of plaintext on a reachable address goes by where the
// listener is bound, not only by the name given: a "localhost" that
// resolves elsewhere (an /etc/hosts or DNS search domain that says so)
// is reachable.
func TestPlaintextRefusedByBoundAddress(t *testing.T) {
	for _, tt := range []struct {
		bound   net.Addr
		args    []string
		wantErr bool
	}{
		{&net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 50051}, nil, true},
		{&net.TCPAddr{IP: net.IPv6unspecified, Port: 50051}, nil, true},
		{&net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 50051}, []string{"--insecure"}, false},
		{&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 50051}, nil, false},
		{&net.TCPAddr{IP: net.IPv6loopback, Port: 50051}, nil, false},
	} {
		t.Run(tt.bound.String()+" "+strings.Join(tt.args, " "), func(t *testing.T) {
			s := newSetup(slog.LevelInfo)
			s.Config.Listen = "localhost:50051"
			s.ListenAddr = tt.bound
			err := setupWith(t, tt.args, s)
			if (err != nil) != tt.wantErr {
				t.Errorf("Setup() = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}
