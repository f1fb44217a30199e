package observe

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
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
	m          *Metrics
	name       string
}

var _ storage.Store = (*instrumented)(nil)

// InstrumentStore wraps s so every call is timed in
// idem_store_op_duration_seconds{store=name} and every failure counted in
// idem_store_errors_total. Expected answers (not found, lease lost, not in
// progress) and calls the caller canceled or whose own deadline ran out
// are not failures; a call idemd's --store-timeout ended, and a ping that
// timed out, are. When s has a
// Swept() uint64 method it feeds idem_records_swept_total{store=name}, and
// a Filterer feeds idem_store_filter_bytes and
// idem_store_filter_answered_total. When the last store of a name is
// closed, the series of that name go. With a nil m it returns s.
func InstrumentStore(name string, s storage.Store, m *Metrics) storage.Store {
	if m == nil {
		return s
	}
	w := &instrumented{Store: s, m: m, name: name}
	// Held while the children are made, so a store of this name closing
	// now cannot delete them under the new one.
	m.storesMu.Lock()
	defer m.storesMu.Unlock()
	m.stores[name]++
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

func (w *instrumented) done(ctx context.Context, op int, start time.Time, err error) {
	w.dur[op].Observe(time.Since(start).Seconds())
	if err != nil && isFailure(ctx, op, err) {
		w.errs[op].Inc()
	}
}

func isFailure(ctx context.Context, op int, err error) bool {
	if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrLeaseLost) ||
		errors.Is(err, storage.ErrNotInProgress) || errors.Is(err, context.Canceled) {
		return false
	}
	// A call whose context ended with no cause of its own was ended by
	// its caller (gRPC's deadline, a cancel), whatever the store made of
	// it: a caller with a 5 ms deadline must not page anyone. The
	// --store-timeout bound ends its context with a cause (the wrapper
	// sits inside it), and pings have no caller: the health checker's
	// timeout is idemd's own, and a store that misses it is down.
	if cerr := ctx.Err(); cerr != nil && context.Cause(ctx) == cerr {
		return op == opPing && cerr == context.DeadlineExceeded
	}
	return true
}

func (w *instrumented) Reserve(ctx context.Context, p storage.ReserveParams) (storage.Outcome, *storage.Record, error) {
	start := time.Now()
	o, r, err := w.Store.Reserve(ctx, p)
	w.done(ctx, opReserve, start, err)
	w.noteReserve(ctx, o, err)
	return o, r, err
}

func (w *instrumented) Complete(ctx context.Context, p storage.CompleteParams) (*storage.Record, error) {
	start := time.Now()
	r, err := w.Store.Complete(ctx, p)
	w.done(ctx, opComplete, start, err)
	return r, err
}

func (w *instrumented) Release(ctx context.Context, id storage.ID, token uint64) (*storage.Record, error) {
	start := time.Now()
	r, err := w.Store.Release(ctx, id, token)
	w.done(ctx, opRelease, start, err)
	return r, err
}

func (w *instrumented) ExtendLease(ctx context.Context, id storage.ID, token uint64, ttl time.Duration) (*storage.Record, error) {
	start := time.Now()
	r, err := w.Store.ExtendLease(ctx, id, token, ttl)
	w.done(ctx, opExtendLease, start, err)
	return r, err
}

func (w *instrumented) Checkpoint(ctx context.Context, id storage.ID, token uint64, cp storage.Checkpoint) (*storage.Record, error) {
	start := time.Now()
	r, err := w.Store.Checkpoint(ctx, id, token, cp)
	w.done(ctx, opCheckpoint, start, err)
	return r, err
}

func (w *instrumented) Lookup(ctx context.Context, id storage.ID) (*storage.Record, error) {
	start := time.Now()
	r, err := w.Store.Lookup(ctx, id)
	w.done(ctx, opLookup, start, err)
	return r, err
}

func (w *instrumented) BatchReserve(ctx context.Context, items []storage.ReserveParams) ([]storage.ReserveResult, error) {
	start := time.Now()
	r, err := w.Store.BatchReserve(ctx, items)
	failed := err
	if failed == nil {
		failed = firstItemFailure(ctx, opBatchReserve, r, func(r storage.ReserveResult) error { return r.Err })
	}
	w.done(ctx, opBatchReserve, start, failed)
	return r, err
}

func (w *instrumented) BatchComplete(ctx context.Context, items []storage.CompleteParams) ([]storage.CompleteResult, error) {
	start := time.Now()
	r, err := w.Store.BatchComplete(ctx, items)
	failed := err
	if failed == nil {
		failed = firstItemFailure(ctx, opBatchComplete, r, func(r storage.CompleteResult) error { return r.Err })
	}
	w.done(ctx, opBatchComplete, start, failed)
	return r, err
}

// firstItemFailure is the first item error of a batch that is a store
// failure: backends that fail a batch part way (a later round, one
// tenant's pipeline) answer the call and fail its items, and such a batch
// is one failed store call, counted once however many items it failed.
func firstItemFailure[R any](ctx context.Context, op int, res []R, errOf func(R) error) error {
	for _, r := range res {
		if err := errOf(r); err != nil && isFailure(ctx, op, err) {
			return err
		}
	}
	return nil
}

func (w *instrumented) Delete(ctx context.Context, id storage.ID) (*storage.Record, error) {
	start := time.Now()
	r, err := w.Store.Delete(ctx, id)
	w.done(ctx, opDelete, start, err)
	return r, err
}

func (w *instrumented) ForceRelease(ctx context.Context, id storage.ID) (*storage.Record, error) {
	start := time.Now()
	r, err := w.Store.ForceRelease(ctx, id)
	w.done(ctx, opForceRelease, start, err)
	return r, err
}

func (w *instrumented) List(ctx context.Context, p storage.ListParams) ([]*storage.Record, bool, error) {
	start := time.Now()
	r, more, err := w.Store.List(ctx, p)
	w.done(ctx, opList, start, err)
	return r, more, err
}

func (w *instrumented) Stats(ctx context.Context, tenant, namespace string) ([]storage.StatsRow, error) {
	start := time.Now()
	r, err := w.Store.Stats(ctx, tenant, namespace)
	w.done(ctx, opStats, start, err)
	return r, err
}

// Ping is recorded when it returns or when its context ends, whichever
// comes first: a Ping that ignores its context (a store stuck in disk I/O)
// would otherwise record nothing while it hangs, and since the health
// checker starts no other meanwhile, IdemStoreDown would see no pings.
func (w *instrumented) Ping(ctx context.Context) error {
	start := time.Now()
	var once sync.Once
	stop := context.AfterFunc(ctx, func() {
		once.Do(func() { w.done(ctx, opPing, start, ctx.Err()) })
	})
	err := w.Store.Ping(ctx)
	stop()
	once.Do(func() { w.done(ctx, opPing, start, err) })
	return err
}

func (w *instrumented) Close() error {
	// Before the store closes: a closed store's filter memory is gone.
	first := false
	w.forgetOnce.Do(func() {
		first = true
		for _, f := range w.forget {
			f()
		}
	})
	start := time.Now()
	err := w.Store.Close()
	w.done(context.Background(), opClose, start, err)
	if first {
		w.m.dropStore(w.name)
	}
	return err
}

// StoreLabels names stores for the store label when one idemd has
// several (a policy file's): each store gets its own series, so one of two
// PostgreSQL stores failing is all of its pings, not half of "postgres".
// The store --store names keeps its kind, which labels do not collide with.
type StoreLabels struct {
	mu    sync.Mutex
	byURL map[string]string
	taken map[string]bool
}

// NewStoreLabels returns an empty StoreLabels.
func NewStoreLabels() *StoreLabels {
	return &StoreLabels{byURL: map[string]string{}, taken: map[string]bool{}}
}

// Label is the store label of the store at rawURL of the given kind
// (idemd.StoreScheme): kind://host/path, without user, password or query,
// which may hold secrets. URLs that differ only there (another user,
// another search_path) get "#2", "#3", … in the order first seen. A URL
// keeps its label for the process's life, across policy reloads.
func (l *StoreLabels) Label(kind, rawURL string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if v, ok := l.byURL[rawURL]; ok {
		return v
	}
	base := kind + "://"
	if u, err := url.Parse(rawURL); err == nil {
		base += u.Host + u.EscapedPath()
	}
	base = strings.ToValidUTF8(base, "?")
	v := base
	for n := 2; l.taken[v]; n++ {
		v = fmt.Sprintf("%s#%d", base, n)
	}
	l.taken[v] = true
	l.byURL[rawURL] = v
	return v
}
