package observe

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/idemhq/idem/storage"
)

// Store operations, the op label of the store metrics.
const (
	opReserve = iota
	opComplete
	opRelease
	opExtendLease
	opCheckpoint
	opLookup
	opBatchReserve
	opBatchComplete
	opDelete
	opForceRelease
	opList
	opStats
	opPing
	opClose
	numOps
)

// StoreOps are the op label values, indexed like the op constants.
var StoreOps = [numOps]string{
	"reserve", "complete", "release", "extend_lease", "checkpoint", "lookup",
	"batch_reserve", "batch_complete", "delete", "force_release", "list", "stats", "ping", "close",
}

// instrumented times every call of the Store it wraps. The label children
// are looked up once, so a call costs two clock reads and one observation.
type instrumented struct {
	storage.Store
	dur  [numOps]prometheus.Observer
	errs [numOps]prometheus.Counter
	// forget lets the metrics go of the store once it is closed.
	forget     []func()
	forgetOnce sync.Once
}

var _ storage.Store = (*instrumented)(nil)

// InstrumentStore wraps s so every call is timed in
// idem_store_op_duration_seconds{store=name} and every failure counted in
// idem_store_errors_total. Expected answers (not found, lease lost, not in
// progress) and calls the caller canceled are not failures. When s has a
// Swept() uint64 method it feeds idem_records_swept_total{store=name}, and
// a Filterer feeds idem_store_filter_bytes and
// idem_store_filter_answered_total. With a nil m it returns s.
func InstrumentStore(name string, s storage.Store, m *Metrics) storage.Store {
	if m == nil {
		return s
	}
	w := &instrumented{Store: s}
	if sw, ok := s.(Swepter); ok {
		w.forget = append(w.forget, m.swept.addSource(name, sw.Swept))
	} else {
		m.swept.counter(name) // export a zero, so the series exists
	}
	if f, ok := s.(Filterer); ok {
		w.forget = append(w.forget, m.filter.addSource(name, f.FilterStats))
	}
	for op := range numOps {
		w.dur[op] = m.storeOp.WithLabelValues(name, StoreOps[op])
		w.errs[op] = m.storeErrors.WithLabelValues(name, StoreOps[op])
	}
	return w
}

// Unwrap returns the wrapped store.
func (w *instrumented) Unwrap() storage.Store { return w.Store }

func (w *instrumented) done(op int, start time.Time, err error) {
	w.dur[op].Observe(time.Since(start).Seconds())
	if err != nil && isFailure(err) {
		w.errs[op].Inc()
	}
}

func isFailure(err error) bool {
	return !errors.Is(err, storage.ErrNotFound) && !errors.Is(err, storage.ErrLeaseLost) &&
		!errors.Is(err, storage.ErrNotInProgress) && !errors.Is(err, context.Canceled)
}

func (w *instrumented) Reserve(ctx context.Context, p storage.ReserveParams) (storage.Outcome, *storage.Record, error) {
	start := time.Now()
	o, r, err := w.Store.Reserve(ctx, p)
	w.done(opReserve, start, err)
	w.noteReserve(ctx, o, err)
	return o, r, err
}

func (w *instrumented) Complete(ctx context.Context, p storage.CompleteParams) (*storage.Record, error) {
	start := time.Now()
	r, err := w.Store.Complete(ctx, p)
	w.done(opComplete, start, err)
	return r, err
}

func (w *instrumented) Release(ctx context.Context, id storage.ID, token uint64) (*storage.Record, error) {
	start := time.Now()
	r, err := w.Store.Release(ctx, id, token)
	w.done(opRelease, start, err)
	return r, err
}

func (w *instrumented) ExtendLease(ctx context.Context, id storage.ID, token uint64, ttl time.Duration) (*storage.Record, error) {
	start := time.Now()
	r, err := w.Store.ExtendLease(ctx, id, token, ttl)
	w.done(opExtendLease, start, err)
	return r, err
}

func (w *instrumented) Checkpoint(ctx context.Context, id storage.ID, token uint64, cp storage.Checkpoint) (*storage.Record, error) {
	start := time.Now()
	r, err := w.Store.Checkpoint(ctx, id, token, cp)
	w.done(opCheckpoint, start, err)
	return r, err
}

func (w *instrumented) Lookup(ctx context.Context, id storage.ID) (*storage.Record, error) {
	start := time.Now()
	r, err := w.Store.Lookup(ctx, id)
	w.done(opLookup, start, err)
	return r, err
}

func (w *instrumented) BatchReserve(ctx context.Context, items []storage.ReserveParams) ([]storage.ReserveResult, error) {
	start := time.Now()
	r, err := w.Store.BatchReserve(ctx, items)
	w.done(opBatchReserve, start, err)
	return r, err
}

func (w *instrumented) BatchComplete(ctx context.Context, items []storage.CompleteParams) ([]storage.CompleteResult, error) {
	start := time.Now()
	r, err := w.Store.BatchComplete(ctx, items)
	w.done(opBatchComplete, start, err)
	return r, err
}

func (w *instrumented) Delete(ctx context.Context, id storage.ID) (*storage.Record, error) {
	start := time.Now()
	r, err := w.Store.Delete(ctx, id)
	w.done(opDelete, start, err)
	return r, err
}

func (w *instrumented) ForceRelease(ctx context.Context, id storage.ID) (*storage.Record, error) {
	start := time.Now()
	r, err := w.Store.ForceRelease(ctx, id)
	w.done(opForceRelease, start, err)
	return r, err
}

func (w *instrumented) List(ctx context.Context, p storage.ListParams) ([]*storage.Record, bool, error) {
	start := time.Now()
	r, more, err := w.Store.List(ctx, p)
	w.done(opList, start, err)
	return r, more, err
}

func (w *instrumented) Stats(ctx context.Context, tenant, namespace string) ([]storage.StatsRow, error) {
	start := time.Now()
	r, err := w.Store.Stats(ctx, tenant, namespace)
	w.done(opStats, start, err)
	return r, err
}

func (w *instrumented) Ping(ctx context.Context) error {
	start := time.Now()
	err := w.Store.Ping(ctx)
	w.done(opPing, start, err)
	return err
}

func (w *instrumented) Close() error {
	// Before the store closes: a closed store's filter memory is gone.
	w.forgetOnce.Do(func() {
		for _, f := range w.forget {
			f()
		}
	})
	start := time.Now()
	err := w.Store.Close()
	w.done(opClose, start, err)
	return err
}
