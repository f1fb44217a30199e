package policy

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/memory"
)

type slowPing struct {
	storage.Store
	entered, release chan struct{}
	armed            bool
}

func (s *slowPing) Ping(ctx context.Context) error {
	if s.armed {
		close(s.entered)
		<-s.release
	}
	return s.Store.Ping(ctx)
}

// TestHealthIgnoresStoreClosedByReload: a reload that drops a store closes
// it, maybe while the health checker pings it; idemd must not report
// NOT_SERVING for it, since it no longer routes to that store.
func TestHealthIgnoresStoreClosedByReload(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	path := filepath.Join(t.TempDir(), "p.yaml")
	writePolicy(t, path, "namespaces:\n  old.*:\n    store: memory://?shards=1\n")
	var wrapped *slowPing
	base := memory.New()
	defer base.Close()
	r, err := Load(ctx, Options{Path: path, Store: base, StoreURL: "memory://", Instrument: func(_ string, st storage.Store) storage.Store {
		wrapped = &slowPing{Store: st, entered: make(chan struct{}), release: make(chan struct{})}
		return wrapped
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	clk := clockwork.NewFakeClock()
	svc, err := server.New(base, server.WithPolicyResolver(r), server.WithHealthClock(clk))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	status := func() healthpb.HealthCheckResponse_ServingStatus {
		res, err := svc.HealthServer().Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return res.Status
	}
	if s := status(); s != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health before = %v", s)
	}
	wrapped.armed = true
	_ = clk.BlockUntilContext(ctx, 1)
	clk.Advance(5 * time.Second) // the periodic check starts and is inside the old store's Ping
	<-wrapped.entered
	writePolicy(t, path, "namespaces:\n  new.*:\n")
	if err := r.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	drained(t, r) // no call was pinned: the old store is closed now
	close(wrapped.release)
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if s := status(); s != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health after a reload = %v, want SERVING (every store of the policy answers)", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
