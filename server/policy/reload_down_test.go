package policy

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/memory"
)

type downPing struct {
	storage.Store
	down *atomic.Bool
}

func (s downPing) Ping(ctx context.Context) error {
	if s.down.Load() {
		return errors.New("idem: store unavailable: down")
	}
	return s.Store.Ping(ctx)
}

// TestReloadKeepingADownStoreSucceeds: a reload pings only the stores it
// opens. One that keeps a store down at the time (the other patterns
// edited) applies, so an outage of one store does not freeze the policy of
// every other namespace; the store is reused, not reopened.
func TestReloadKeepingADownStoreSucceeds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	path := filepath.Join(t.TempDir(), "p.yaml")
	writePolicy(t, path, "namespaces:\n  notify.*:\n    store: memory://?shards=1\n  a.*:\n    max_lease: 2m\n")
	var down atomic.Bool
	opened := 0
	base := memory.New()
	defer base.Close()
	r, err := Load(ctx, Options{Path: path, Store: base, StoreURL: "memory://", Instrument: func(_ string, st storage.Store) storage.Store {
		opened++
		return downPing{Store: st, down: &down}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	down.Store(true)
	writePolicy(t, path, "namespaces:\n  notify.*:\n    store: memory://?shards=1\n  a.*:\n    max_lease: 1m\n")
	if err := r.Reload(ctx); err != nil {
		t.Fatalf("Reload() keeping a down store = %v, want nil", err)
	}
	if _, pol := r.Resolve("default", "a.x"); pol.MaxLease != time.Minute {
		t.Errorf("max lease of a.x after the reload = %v, want 1m", pol.MaxLease)
	}
	if opened != 1 {
		t.Errorf("stores opened = %d, want 1 (the down store reused)", opened)
	}
}
