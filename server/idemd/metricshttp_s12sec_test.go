package idemd

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// metricsAddrHandler reports the "idemd serving" line's metrics_addr.
type metricsAddrHandler struct{ addr chan string }

func (h *metricsAddrHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *metricsAddrHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *metricsAddrHandler) WithGroup(string) slog.Handler            { return h }
func (h *metricsAddrHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "idemd serving" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "metrics_addr" {
				h.addr <- a.Value.String()
			}
			return true
		})
	}
	return nil
}

func serveMetrics(t *testing.T) (metricsAddr string, stop func()) {
	t.Helper()
	cfg := memoryConfig()
	cfg.MetricsListen = "127.0.0.1:0"
	ctx, cancel := context.WithCancel(context.Background())
	h := &metricsAddrHandler{addr: make(chan string, 1)}
	errc := make(chan error, 1)
	go func() { errc <- Serve(ctx, cfg, slog.New(h)) }()
	select {
	case metricsAddr = <-h.addr:
	case err := <-errc:
		cancel()
		t.Fatalf("Serve() = %v before serving", err)
	case <-time.After(defaultTestTimeout):
		cancel()
		t.Fatal("Serve() did not start")
	}
	return metricsAddr, func() { cancel(); <-errc }
}

// A client that fetched /metrics once and then keeps its keep-alive
// connection open without a word must not hold a goroutine and a file
// descriptor (shared with the gRPC listener) for ever: with neither
// IdleTimeout nor ReadTimeout, net/http waits for the next request with no
// deadline at all.
func TestMetricsIdleConnectionsAreClosed(t *testing.T) {
	old := metricsIdleTimeout
	metricsIdleTimeout = 200 * time.Millisecond
	defer func() { metricsIdleTimeout = old }()
	addr, stop := serveMetrics(t)
	defer stop()

	c, err := net.DialTimeout("tcp", addr, defaultTestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(defaultTestTimeout))
	if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: idemd\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("GET /metrics: %s (close %v), want 200 on a kept-alive connection", resp.Status, resp.Close)
	}
	// Idle now: the server must hang up well before the test's deadline.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = br.ReadByte()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("idle keep-alive connection to /metrics still open after 5s; want it closed after the idle timeout")
	}
}

// warnHandler reports the "idemd serving" address and keeps warnings.
type warnHandler struct {
	addrHandler
	mu    sync.Mutex
	warns []string
}

func (h *warnHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.mu.Lock()
		h.warns = append(h.warns, r.Message)
		h.mu.Unlock()
	}
	return h.addrHandler.Handle(ctx, r)
}

// /metrics has no TLS and no authentication, and its series name every
// tenant's namespaces and the stores' hosts: bound where other machines
// reach it, idemd says so at start.
func TestMetricsOnReachableAddressWarns(t *testing.T) {
	for _, tt := range []struct {
		listen string
		want   bool
	}{
		{"0.0.0.0:0", true},
		{"127.0.0.1:0", false},
	} {
		t.Run(tt.listen, func(t *testing.T) {
			cfg := memoryConfig()
			cfg.MetricsListen = tt.listen
			h := &warnHandler{addrHandler: addrHandler{addr: make(chan string, 1)}}
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() { errc <- Serve(ctx, cfg, slog.New(h)) }()
			select {
			case <-h.addr:
			case err := <-errc:
				cancel()
				t.Fatalf("Serve() = %v before serving", err)
			case <-time.After(defaultTestTimeout):
				cancel()
				t.Fatal("Serve() did not start")
			}
			cancel()
			<-errc
			h.mu.Lock()
			defer h.mu.Unlock()
			got := slices.ContainsFunc(h.warns, func(m string) bool { return strings.Contains(m, "/metrics") })
			if got != tt.want {
				t.Errorf("warned about /metrics on %s: %v, want %v (warnings %q)", tt.listen, got, tt.want, h.warns)
			}
		})
	}
}
