package storagetest

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/idemhq/idem/storage"
)

// Replicas is one storage.Store made of several that share one database,
// as idemd replicas do: each call goes to one of them, at random. Give it
// to Stress to check that replicas agree.
type Replicas struct {
	Stores []storage.Store
	mu     sync.RWMutex // shared by every call; Pause holds it alone
}

var _ storage.Store = (*Replicas)(nil)

// Pause waits for the calls in flight and holds back new ones until resume
// is called. A harness moves the replicas' clocks under it, so that no call
// sees replicas disagree on the time.
func (r *Replicas) Pause() (resume func()) {
	r.mu.Lock()
	return r.mu.Unlock
}

func (r *Replicas) pick() (storage.Store, func()) {
	r.mu.RLock()
	return r.Stores[rand.IntN(len(r.Stores))], r.mu.RUnlock
}

func (r *Replicas) Reserve(ctx context.Context, p storage.ReserveParams) (storage.Outcome, *storage.Record, error) {
	s, done := r.pick()
	defer done()
	return s.Reserve(ctx, p)
}

func (r *Replicas) Complete(ctx context.Context, p storage.CompleteParams) (*storage.Record, error) {
	s, done := r.pick()
	defer done()
	return s.Complete(ctx, p)
}

func (r *Replicas) Release(ctx context.Context, id storage.ID, token uint64) (*storage.Record, error) {
	s, done := r.pick()
	defer done()
	return s.Release(ctx, id, token)
}

func (r *Replicas) ExtendLease(ctx context.Context, id storage.ID, token uint64, ttl time.Duration) (*storage.Record, error) {
	s, done := r.pick()
	defer done()
	return s.ExtendLease(ctx, id, token, ttl)
}

func (r *Replicas) Checkpoint(ctx context.Context, id storage.ID, token uint64, cp storage.Checkpoint) (*storage.Record, error) {
	s, done := r.pick()
	defer done()
	return s.Checkpoint(ctx, id, token, cp)
}

func (r *Replicas) Lookup(ctx context.Context, id storage.ID) (*storage.Record, error) {
	s, done := r.pick()
	defer done()
	return s.Lookup(ctx, id)
}

func (r *Replicas) BatchReserve(ctx context.Context, items []storage.ReserveParams) ([]storage.ReserveResult, error) {
	s, done := r.pick()
	defer done()
	return s.BatchReserve(ctx, items)
}

func (r *Replicas) BatchComplete(ctx context.Context, items []storage.CompleteParams) ([]storage.CompleteResult, error) {
	s, done := r.pick()
	defer done()
	return s.BatchComplete(ctx, items)
}

func (r *Replicas) Delete(ctx context.Context, id storage.ID) (*storage.Record, error) {
	s, done := r.pick()
	defer done()
	return s.Delete(ctx, id)
}

func (r *Replicas) ForceRelease(ctx context.Context, id storage.ID) (*storage.Record, error) {
	s, done := r.pick()
	defer done()
	return s.ForceRelease(ctx, id)
}

func (r *Replicas) List(ctx context.Context, p storage.ListParams) ([]*storage.Record, bool, error) {
	s, done := r.pick()
	defer done()
	return s.List(ctx, p)
}

func (r *Replicas) Stats(ctx context.Context, tenant, namespace string) ([]storage.StatsRow, error) {
	s, done := r.pick()
	defer done()
	return s.Stats(ctx, tenant, namespace)
}

func (r *Replicas) Ping(ctx context.Context) error {
	s, done := r.pick()
	defer done()
	return s.Ping(ctx)
}

// Close closes every replica and returns the first error.
func (r *Replicas) Close() error {
	var first error
	for _, s := range r.Stores {
		if err := s.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
