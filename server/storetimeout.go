package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/idemhq/idem"
	"github.com/idemhq/idem/storage"
)

// DefaultStoreTimeout bounds each store operation unless WithStoreTimeout
// says otherwise: far above any healthy store's latency, far below the
// hours a blackholed connection takes to fail.
const DefaultStoreTimeout = 10 * time.Second

// boundedStore is a store whose operations each end after the Service's
// store timeout: a call that carries no deadline (grpcurl, many non-Go
// clients) must not hold a goroutine and its request for as long as TCP
// takes to give up on a store that stopped answering. It is a value, not
// an interface, so bounding costs a call no allocation of its own.
type boundedStore struct {
	st storage.Store
	d  time.Duration // 0: unbounded
}

func (s *Service) bounded(st storage.Store) boundedStore {
	return boundedStore{st: st, d: s.opts.storeTimeout}
}

// errBound is the cause of a context the store timeout ended, which tells
// it apart from the caller's own deadline.
var errBound = errors.New("idem: store timeout")

// storeTimeoutError is a store operation the store timeout ended. It is an
// idem.ErrUnavailable: the store may answer the next try, or another
// replica's. cause, the store's own error, is for the log alone: it may
// name hosts.
type storeTimeoutError struct {
	d     time.Duration
	cause error
}

func (e *storeTimeoutError) Error() string {
	return fmt.Sprintf("idem: store did not answer within --store-timeout (%v)", e.d)
}

func (e *storeTimeoutError) Unwrap() error { return idem.ErrUnavailable }

func nop() {}

// bound returns the context of one store operation. A caller's deadline
// that comes first already bounds it, and costs nothing more.
func (b boundedStore) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if b.d <= 0 {
		return ctx, nop
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= b.d {
		return ctx, nop
	}
	return context.WithTimeoutCause(ctx, b.d, errBound)
}

// check turns the error of an operation the bound ended into a
// storeTimeoutError. Only the errors a store gives for an ended context
// (or a connection it gave up on) are turned: an answer that arrived as
// the bound ran out stays the answer.
func (b boundedStore) check(ctx context.Context, err error) error {
	if err == nil || context.Cause(ctx) != errBound {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, idem.ErrUnavailable) {
		return &storeTimeoutError{d: b.d, cause: err}
	}
	return err
}

func (b boundedStore) Reserve(ctx context.Context, p storage.ReserveParams) (storage.Outcome, *storage.Record, error) {
	ctx, cancel := b.bound(ctx)
	defer cancel()
	out, rec, err := b.st.Reserve(ctx, p)
	return out, rec, b.check(ctx, err)
}

func (b boundedStore) Complete(ctx context.Context, p storage.CompleteParams) (*storage.Record, error) {
	ctx, cancel := b.bound(ctx)
	defer cancel()
	rec, err := b.st.Complete(ctx, p)
	return rec, b.check(ctx, err)
}

func (b boundedStore) Release(ctx context.Context, id storage.ID, token uint64) (*storage.Record, error) {
	ctx, cancel := b.bound(ctx)
	defer cancel()
	rec, err := b.st.Release(ctx, id, token)
	return rec, b.check(ctx, err)
}

func (b boundedStore) ExtendLease(ctx context.Context, id storage.ID, token uint64, ttl time.Duration) (*storage.Record, error) {
	ctx, cancel := b.bound(ctx)
	defer cancel()
	rec, err := b.st.ExtendLease(ctx, id, token, ttl)
	return rec, b.check(ctx, err)
}

func (b boundedStore) Checkpoint(ctx context.Context, id storage.ID, token uint64, cp storage.Checkpoint) (*storage.Record, error) {
	ctx, cancel := b.bound(ctx)
	defer cancel()
	rec, err := b.st.Checkpoint(ctx, id, token, cp)
	return rec, b.check(ctx, err)
}

func (b boundedStore) Lookup(ctx context.Context, id storage.ID) (*storage.Record, error) {
	ctx, cancel := b.bound(ctx)
	defer cancel()
	rec, err := b.st.Lookup(ctx, id)
	return rec, b.check(ctx, err)
}

// BatchReserve also turns the items' errors: a backend that runs a failed
// batch item by item reports the bound per item.
func (b boundedStore) BatchReserve(ctx context.Context, items []storage.ReserveParams) ([]storage.ReserveResult, error) {
	ctx, cancel := b.bound(ctx)
	defer cancel()
	res, err := b.st.BatchReserve(ctx, items)
	for i := range res {
		res[i].Err = b.check(ctx, res[i].Err)
	}
	return res, b.check(ctx, err)
}

func (b boundedStore) BatchComplete(ctx context.Context, items []storage.CompleteParams) ([]storage.CompleteResult, error) {
	ctx, cancel := b.bound(ctx)
	defer cancel()
	res, err := b.st.BatchComplete(ctx, items)
	for i := range res {
		res[i].Err = b.check(ctx, res[i].Err)
	}
	return res, b.check(ctx, err)
}

func (b boundedStore) Delete(ctx context.Context, id storage.ID) (*storage.Record, error) {
	ctx, cancel := b.bound(ctx)
	defer cancel()
	rec, err := b.st.Delete(ctx, id)
	return rec, b.check(ctx, err)
}

func (b boundedStore) ForceRelease(ctx context.Context, id storage.ID) (*storage.Record, error) {
	ctx, cancel := b.bound(ctx)
	defer cancel()
	rec, err := b.st.ForceRelease(ctx, id)
	return rec, b.check(ctx, err)
}

func (b boundedStore) List(ctx context.Context, p storage.ListParams) ([]*storage.Record, bool, error) {
	ctx, cancel := b.bound(ctx)
	defer cancel()
	recs, more, err := b.st.List(ctx, p)
	return recs, more, b.check(ctx, err)
}

// Stats counts every live record of a tenant, which takes longer the more
// there are: a caller that set a deadline decides how long it may take,
// and only a call without one is bounded.
func (b boundedStore) Stats(ctx context.Context, tenant, namespace string) ([]storage.StatsRow, error) {
	if _, ok := ctx.Deadline(); ok {
		return b.st.Stats(ctx, tenant, namespace)
	}
	ctx, cancel := b.bound(ctx)
	defer cancel()
	rows, err := b.st.Stats(ctx, tenant, namespace)
	return rows, b.check(ctx, err)
}
