package server

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/memory"
)

// hangStore stands for a network store that stopped answering: while
// hanging, every operation but Ping blocks until its context ends. It
// reports the deadline each Reserve and Stats got.
type hangStore struct {
	storage.Store
	hanging atomic.Bool
	// leaky: a hung operation fails as a network store maps its dropped
	// connection, naming the host; perItem: BatchReserve fails item by item.
	leaky, perItem bool
	entered        chan struct{}
	mu             sync.Mutex
	deadlines      []deadline
}

type deadline struct {
	t  time.Time
	ok bool
}

func newHangStore(st storage.Store) *hangStore {
	return &hangStore{Store: st, entered: make(chan struct{}, 1)}
}

func (h *hangStore) record(ctx context.Context) {
	t, ok := ctx.Deadline()
	h.mu.Lock()
	h.deadlines = append(h.deadlines, deadline{t, ok})
	h.mu.Unlock()
}

func (h *hangStore) seen() []deadline {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]deadline(nil), h.deadlines...)
}

// block returns the error a hung operation ends with, once ctx ends.
func (h *hangStore) block(ctx context.Context) error {
	select {
	case h.entered <- struct{}{}:
	default:
	}
	<-ctx.Done()
	if h.leaky {
		return fmt.Errorf("%w: dial tcp secret-db.internal:5432: %v", storage.ErrUnavailable, ctx.Err())
	}
	return ctx.Err()
}

func (h *hangStore) Reserve(ctx context.Context, p storage.ReserveParams) (storage.Outcome, *storage.Record, error) {
	h.record(ctx)
	if h.hanging.Load() {
		return 0, nil, h.block(ctx)
	}
	return h.Store.Reserve(ctx, p)
}

func (h *hangStore) Complete(ctx context.Context, p storage.CompleteParams) (*storage.Record, error) {
	if h.hanging.Load() {
		return nil, h.block(ctx)
	}
	return h.Store.Complete(ctx, p)
}

func (h *hangStore) Release(ctx context.Context, id storage.ID, token uint64) (*storage.Record, error) {
	if h.hanging.Load() {
		return nil, h.block(ctx)
	}
	return h.Store.Release(ctx, id, token)
}

func (h *hangStore) ExtendLease(ctx context.Context, id storage.ID, token uint64, ttl time.Duration) (*storage.Record, error) {
	if h.hanging.Load() {
		return nil, h.block(ctx)
	}
	return h.Store.ExtendLease(ctx, id, token, ttl)
}

func (h *hangStore) Checkpoint(ctx context.Context, id storage.ID, token uint64, cp storage.Checkpoint) (*storage.Record, error) {
	if h.hanging.Load() {
		return nil, h.block(ctx)
	}
	return h.Store.Checkpoint(ctx, id, token, cp)
}

func (h *hangStore) Lookup(ctx context.Context, id storage.ID) (*storage.Record, error) {
	if h.hanging.Load() {
		return nil, h.block(ctx)
	}
	return h.Store.Lookup(ctx, id)
}

func (h *hangStore) BatchReserve(ctx context.Context, items []storage.ReserveParams) ([]storage.ReserveResult, error) {
	if !h.hanging.Load() {
		return h.Store.BatchReserve(ctx, items)
	}
	err := h.block(ctx)
	if !h.perItem {
		return nil, err
	}
	out := make([]storage.ReserveResult, len(items))
	for i := range out {
		out[i].Err = err
	}
	return out, nil
}

func (h *hangStore) BatchComplete(ctx context.Context, items []storage.CompleteParams) ([]storage.CompleteResult, error) {
	if h.hanging.Load() {
		return nil, h.block(ctx)
	}
	return h.Store.BatchComplete(ctx, items)
}

func (h *hangStore) Delete(ctx context.Context, id storage.ID) (*storage.Record, error) {
	if h.hanging.Load() {
		return nil, h.block(ctx)
	}
	return h.Store.Delete(ctx, id)
}

func (h *hangStore) ForceRelease(ctx context.Context, id storage.ID) (*storage.Record, error) {
	if h.hanging.Load() {
		return nil, h.block(ctx)
	}
	return h.Store.ForceRelease(ctx, id)
}

func (h *hangStore) List(ctx context.Context, p storage.ListParams) ([]*storage.Record, bool, error) {
	if h.hanging.Load() {
		return nil, false, h.block(ctx)
	}
	return h.Store.List(ctx, p)
}

func (h *hangStore) Stats(ctx context.Context, tenant, namespace string) ([]storage.StatsRow, error) {
	h.record(ctx)
	if h.hanging.Load() {
		return nil, h.block(ctx)
	}
	return h.Store.Stats(ctx, tenant, namespace)
}

// newHangEnv is a testEnv whose memory store sits behind a hangStore.
func newHangEnv(t *testing.T, opts ...Option) (*testEnv, *hangStore) {
	t.Helper()
	clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	h := newHangStore(memory.New(memory.WithClock(clock), memory.WithSweepInterval(0)))
	return newEnvOn(t, clock, &faultStore{Store: h}, opts...), h
}

// noDeadline is a context without a deadline, as grpcurl's calls have;
// it ends with the test's, so a call the bound misses fails the test
// instead of hanging it.
func noDeadline(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(testContext(t), cancel)
	t.Cleanup(func() { stop(); cancel() })
	return ctx
}

// wantStoreTimeout fails unless err is the answer of an operation the
// store timeout d ended: UNAVAILABLE with RetryInfo, naming the bound
// and nothing of the store.
func wantStoreTimeout(t *testing.T, err error, d time.Duration) {
	t.Helper()
	if got := status.Code(err); got != codes.Unavailable {
		t.Fatalf("code = %v (%v), want Unavailable", got, err)
	}
	if want := fmt.Sprintf("idem: store did not answer within --store-timeout (%v)", d); status.Convert(err).Message() != want {
		t.Errorf("message = %q, want %q", status.Convert(err).Message(), want)
	}
	if retryInfo(err) == nil {
		t.Errorf("error %v has no RetryInfo", err)
	}
	if ei := errorInfo(err); ei.GetReason() != ReasonUnavailable {
		t.Errorf("ErrorInfo reason = %q, want %q", ei.GetReason(), ReasonUnavailable)
	}
}

// A call without a deadline against a store that stopped answering ends
// after the store timeout with UNAVAILABLE and RetryInfo, instead of
// hanging until TCP gives up: every method that reaches the store.
func TestStoreTimeoutEndsHungCalls(t *testing.T) {
	const bound = 50 * time.Millisecond
	for _, leaky := range []bool{false, true} {
		t.Run(fmt.Sprintf("leaky=%v", leaky), func(t *testing.T) {
			e, h := newHangEnv(t, WithStoreTimeout(bound))
			h.leaky = leaky
			held, err := e.idem.Reserve(testContext(t), &idemv1.ReserveRequest{Namespace: testNS, Key: "held"})
			if err != nil {
				t.Fatal(err)
			}
			tok := held.GetRecord().GetToken()
			h.hanging.Store(true)
			long, cancel := context.WithTimeout(noDeadline(t), time.Hour)
			defer cancel()
			for _, tt := range []struct {
				name string
				call func(context.Context) error
			}{
				{"Reserve", func(ctx context.Context) error {
					_, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "k"})
					return err
				}},
				{"Reserve with wait", func(ctx context.Context) error {
					_, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "held", Wait: durationpb.New(10 * time.Second)})
					return err
				}},
				{"Complete", func(ctx context.Context) error {
					_, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: testNS, Key: "held", Token: tok})
					return err
				}},
				{"Release", func(ctx context.Context) error {
					_, err := e.idem.Release(ctx, &idemv1.ReleaseRequest{Namespace: testNS, Key: "held", Token: tok})
					return err
				}},
				{"ExtendLease", func(ctx context.Context) error {
					_, err := e.idem.ExtendLease(ctx, &idemv1.ExtendLeaseRequest{Namespace: testNS, Key: "held", Token: tok})
					return err
				}},
				{"Checkpoint", func(ctx context.Context) error {
					_, err := e.idem.Checkpoint(ctx, &idemv1.CheckpointRequest{Namespace: testNS, Key: "held", Token: tok, Phase: "p"})
					return err
				}},
				{"Lookup", func(ctx context.Context) error {
					_, err := e.idem.Lookup(ctx, &idemv1.LookupRequest{Namespace: testNS, Key: "held"})
					return err
				}},
				{"BatchReserve", func(ctx context.Context) error {
					_, err := e.idem.BatchReserve(ctx, &idemv1.BatchReserveRequest{Namespace: testNS, Items: []*idemv1.BatchReserveRequest_Item{{Key: "b"}}})
					return err
				}},
				{"BatchComplete", func(ctx context.Context) error {
					_, err := e.idem.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: testNS, Items: []*idemv1.BatchCompleteRequest_Item{{Key: "held", Token: tok}}})
					return err
				}},
				{"DeleteKey", func(ctx context.Context) error {
					_, err := e.admin.DeleteKey(ctx, &idemv1.DeleteKeyRequest{Namespace: testNS, Key: "held"})
					return err
				}},
				{"ForceRelease", func(ctx context.Context) error {
					_, err := e.admin.ForceRelease(ctx, &idemv1.ForceReleaseRequest{Namespace: testNS, Key: "held"})
					return err
				}},
				{"ListKeys", func(ctx context.Context) error {
					_, err := e.admin.ListKeys(ctx, &idemv1.ListKeysRequest{Namespace: testNS})
					return err
				}},
				{"Stats", func(ctx context.Context) error {
					_, err := e.admin.Stats(ctx, &idemv1.StatsRequest{})
					return err
				}},
			} {
				t.Run(tt.name, func(t *testing.T) {
					wantStoreTimeout(t, tt.call(noDeadline(t)), bound)
				})
				if tt.name == "Stats" {
					continue // a caller's deadline bounds Stats instead (below)
				}
				// A caller's deadline later than the bound leaves the bound in force.
				t.Run(tt.name+" with a later deadline", func(t *testing.T) {
					wantStoreTimeout(t, tt.call(long), bound)
				})
			}
		})
	}
}

// A backend that runs a failed batch item by item reports the bound per
// item; each item answers as a whole call would.
func TestStoreTimeoutOfBatchItems(t *testing.T) {
	const bound = 50 * time.Millisecond
	e, h := newHangEnv(t, WithStoreTimeout(bound))
	h.perItem = true
	h.hanging.Store(true)
	resp, err := e.idem.BatchReserve(noDeadline(t), &idemv1.BatchReserveRequest{Namespace: testNS, Items: []*idemv1.BatchReserveRequest_Item{{Key: "a"}, {Key: "b"}}})
	if err != nil {
		t.Fatalf("BatchReserve() error = %v", err)
	}
	want := fmt.Sprintf("idem: store did not answer within --store-timeout (%v)", bound)
	for i, r := range resp.GetResults() {
		if c, msg := codes.Code(r.GetError().GetCode()), r.GetError().GetMessage(); c != codes.Unavailable || msg != want {
			t.Errorf("item %d error = %v %q, want Unavailable %q", i, c, msg, want)
		}
	}
}

// The caller's own deadline or cancellation, when it ends a hung operation
// first, answers as it did without the bound.
func TestStoreTimeoutLeavesCallersDeadline(t *testing.T) {
	e, h := newHangEnv(t, WithStoreTimeout(time.Hour))
	h.hanging.Store(true)
	ctx, cancel := context.WithTimeout(noDeadline(t), 20*time.Millisecond)
	defer cancel()
	_, err := e.svc.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "k"})
	if got := status.Code(err); got != codes.DeadlineExceeded {
		t.Errorf("Reserve() past the caller's deadline: code = %v (%v), want DeadlineExceeded", got, err)
	}

	ctx, cancel = context.WithCancel(noDeadline(t))
	errc := make(chan error, 1)
	go func() {
		_, err := e.svc.Lookup(ctx, &idemv1.LookupRequest{Namespace: testNS, Key: "k"})
		errc <- err
	}()
	<-h.entered
	cancel()
	if got := status.Code(<-errc); got != codes.Canceled {
		t.Errorf("Lookup() canceled by the caller: code = %v, want Canceled", got)
	}
}

// The bound is per store operation, not per call: a Reserve that waits
// longer than the bound still reads the store after the wait.
func TestStoreTimeoutBoundsEachReadOfAWait(t *testing.T) {
	const bound = time.Second
	e, h := newHangEnv(t, WithStoreTimeout(bound))
	ctx := testContext(t)
	held, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	type answer struct {
		resp *idemv1.ReserveResponse
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		r, err := e.idem.Reserve(noDeadline(t), &idemv1.ReserveRequest{Namespace: testNS, Key: "k", Wait: durationpb.New(20 * time.Second)})
		done <- answer{r, err}
	}()
	// The waiter's first read answered IN_PROGRESS; let its bound pass.
	if err := e.clock.BlockUntilContext(ctx, 2+healthTickers); err != nil {
		t.Fatalf("the waiter did not wait: %v", err)
	}
	seen := h.seen()
	first := seen[len(seen)-1]
	if !first.ok {
		t.Fatal("the waiter's first read had no deadline")
	}
	time.Sleep(time.Until(first.t))
	if _, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: testNS, Key: "k", Token: held.GetRecord().GetToken()}); err != nil {
		t.Fatal(err)
	}
	a := <-done
	if a.err != nil || a.resp.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED {
		t.Errorf("waiting Reserve() = %v, %v; want COMPLETED", a.resp.GetOutcome(), a.err)
	}
}

// 0 turns the bound off; without the option it is DefaultStoreTimeout;
// Stats under a caller's deadline keeps that deadline alone.
func TestStoreTimeoutOption(t *testing.T) {
	t.Run("default", func(t *testing.T) {
		e, h := newHangEnv(t)
		before := time.Now()
		if _, err := e.svc.Reserve(context.Background(), &idemv1.ReserveRequest{Namespace: testNS, Key: "k"}); err != nil {
			t.Fatal(err)
		}
		after := time.Now()
		dl := h.seen()[0]
		if !dl.ok || dl.t.Before(before.Add(DefaultStoreTimeout)) || dl.t.After(after.Add(DefaultStoreTimeout)) {
			t.Errorf("store deadline = %v (set %v), want %v after the call", dl.t, dl.ok, DefaultStoreTimeout)
		}
	})
	t.Run("zero", func(t *testing.T) {
		e, h := newHangEnv(t, WithStoreTimeout(0))
		if _, err := e.svc.Reserve(context.Background(), &idemv1.ReserveRequest{Namespace: testNS, Key: "k"}); err != nil {
			t.Fatal(err)
		}
		if dl := h.seen()[0]; dl.ok {
			t.Errorf("store deadline = %v with the bound off, want none", dl.t)
		}
	})
	t.Run("stats under a deadline", func(t *testing.T) {
		e, h := newHangEnv(t, WithStoreTimeout(time.Millisecond))
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		want, _ := ctx.Deadline()
		if _, err := e.svc.Stats(ctx, &idemv1.StatsRequest{}); err != nil {
			t.Fatal(err)
		}
		if dl := h.seen()[0]; !dl.ok || !dl.t.Equal(want) {
			t.Errorf("Stats store deadline = %v (set %v), want the caller's %v", dl.t, dl.ok, want)
		}
	})
	t.Run("negative", func(t *testing.T) {
		st := memory.New(memory.WithSweepInterval(0))
		defer st.Close()
		if _, err := New(st, WithStoreTimeout(-time.Second)); err == nil {
			t.Error("New() with a negative store timeout = nil error")
		}
	})
}
