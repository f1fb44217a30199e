package idemd

import (
	"context"
	"log/slog"
	"testing"
	"time"
)

// captureHandler keeps the attributes of the "idemd serving" line.
type captureHandler struct {
	addrHandler
	attrs chan map[string]string
}

func (h *captureHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "idemd serving" {
		m := map[string]string{}
		r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
		h.attrs <- m
	}
	return nil
}

// An operator reading the start-up line learns what this replica enforces,
// not only where it listens.
func TestServingLineStatesLimits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	cfg := memoryConfig()
	cfg.MaxLease = 10 * time.Minute
	cfg.MaxResultBytes = 4096
	h := &captureHandler{attrs: make(chan map[string]string, 1)}
	sctx, stop := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- Serve(sctx, cfg, slog.New(h)) }()
	var got map[string]string
	select {
	case got = <-h.attrs:
	case err := <-errc:
		t.Fatalf("Serve() = %v before serving", err)
	case <-ctx.Done():
		t.Fatal("Serve() did not start")
	}
	stop()
	if err := <-errc; err != nil {
		t.Fatalf("Serve() = %v", err)
	}
	want := map[string]string{
		"store": "memory://", "version": Version(),
		"default_lease": "30s", "max_lease": "10m0s", "default_retention": "24h0m0s", "max_retention": "720h0m0s",
		"max_result_bytes": "4096", "store_timeout": "10s",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("idemd serving %s = %q, want %q", k, got[k], v)
		}
	}
	if got["addr"] == "" {
		t.Errorf("idemd serving has no addr: %v", got)
	}
}
