package consumer_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"

	"github.com/idemhq/idem/client"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage/memory"
)

const defaultTestTimeout = 20 * time.Second

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is a real idem (server over the memory store) whose store runs on a
// fake clock, seen through a Service that counts calls and can lose the
// answers of chosen calls, as a crashed consumer would.
type env struct {
	client.Service
	storeClock *clockwork.FakeClock

	reserves, batchReserves, completes, batchCompletes, releases, extends atomic.Int64
	extended                                                              chan struct{}

	mu           sync.Mutex
	dropComplete map[string]bool // Complete for these keys never reaches idem
}

func newEnv(t *testing.T) *env {
	t.Helper()
	fc := clockwork.NewFakeClock()
	st := memory.New(memory.WithClock(fc), memory.WithSweepInterval(0))
	srv, err := server.New(st)
	if err != nil {
		t.Fatalf("server.New() = %v", err)
	}
	t.Cleanup(func() {
		srv.Close()
		st.Close()
	})
	return &env{Service: client.Local(srv), storeClock: fc, extended: make(chan struct{}, 16), dropComplete: map[string]bool{}}
}

func (e *env) Reserve(ctx context.Context, req *idemv1.ReserveRequest) (*idemv1.ReserveResponse, error) {
	e.reserves.Add(1)
	return e.Service.Reserve(ctx, req)
}

func (e *env) BatchReserve(ctx context.Context, req *idemv1.BatchReserveRequest) (*idemv1.BatchReserveResponse, error) {
	e.batchReserves.Add(1)
	return e.Service.BatchReserve(ctx, req)
}

func (e *env) Complete(ctx context.Context, req *idemv1.CompleteRequest) (*idemv1.CompleteResponse, error) {
	e.completes.Add(1)
	e.mu.Lock()
	drop := e.dropComplete[req.GetKey()]
	e.mu.Unlock()
	if drop {
		return nil, context.Canceled
	}
	return e.Service.Complete(ctx, req)
}

func (e *env) BatchComplete(ctx context.Context, req *idemv1.BatchCompleteRequest) (*idemv1.BatchCompleteResponse, error) {
	e.batchCompletes.Add(1)
	return e.Service.BatchComplete(ctx, req)
}

func (e *env) Release(ctx context.Context, req *idemv1.ReleaseRequest) (*idemv1.ReleaseResponse, error) {
	e.releases.Add(1)
	return e.Service.Release(ctx, req)
}

func (e *env) ExtendLease(ctx context.Context, req *idemv1.ExtendLeaseRequest) (*idemv1.ExtendLeaseResponse, error) {
	e.extends.Add(1)
	resp, err := e.Service.ExtendLease(ctx, req)
	select {
	case e.extended <- struct{}{}:
	default:
	}
	return resp, err
}

func (e *env) drop(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.dropComplete[key] = true
}

func (e *env) undrop(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.dropComplete, key)
}
