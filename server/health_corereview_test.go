package server

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/memory"
)

// hungPing is a store whose Ping, once armed, ignores its context and
// returns only when released: a disk stuck in I/O, a lock Close holds.
type hungPing struct {
	storage.Store
	armed   atomic.Bool
	started atomic.Int32
	release chan struct{}
	once    sync.Once
}

func (h *hungPing) Ping(ctx context.Context) error {
	if !h.armed.Load() {
		return h.Store.Ping(ctx)
	}
	h.started.Add(1)
	<-h.release
	return ctx.Err()
}

func (h *hungPing) unblock() { h.once.Do(func() { close(h.release) }) }

// TestHealthNotServingWhenPingHangs: a store whose Ping never returns is
// down. The checker gives up on it at its timeout instead of waiting with
// the last SERVING published, and pings it once, not once per check.
func TestHealthNotServingWhenPingHangs(t *testing.T) {
	ctx := testContext(t)
	mem := memory.New()
	defer mem.Close()
	st := &hungPing{Store: mem, release: make(chan struct{})}
	// The periodic checker stays out of the way: checks are run by hand.
	// The health timeout is long enough for the memory store's first Ping
	// on a loaded machine (with 1 ms it sometimes was not), and each hung
	// check below waits it out once.
	svc, err := New(st, WithHealthCheck(time.Hour, time.Second), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	defer st.unblock() // before Close: the ping's goroutine must end for goleak
	status := func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		r, err := svc.HealthServer().Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetStatus()
	}
	if got := status(); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("status before = %v, want SERVING", got)
	}
	st.armed.Store(true)
	for i := range 2 {
		done := make(chan struct{})
		go func() {
			defer close(done)
			svc.checkHealth()
		}()
		select {
		case <-done:
		case <-ctx.Done():
			stuck := status()
			st.unblock()
			<-done
			t.Fatalf("check %d waited for a Ping that ignores its context; status stayed %v", i, stuck)
		}
		if got := status(); got != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("check %d: status with a hung Ping = %v, want NOT_SERVING", i, got)
		}
	}
	if n := st.started.Load(); n != 1 {
		t.Errorf("hung store pinged %d times, want 1 (a check joins the ping still running)", n)
	}
}
