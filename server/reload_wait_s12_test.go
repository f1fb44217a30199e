package server

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/protobuf/types/known/durationpb"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/memory"
)

// movingResolver routes every namespace to one store, which a test swaps
// as a policy reload moving the namespace would.
type movingResolver struct {
	st atomic.Pointer[storage.Store]
}

func (r *movingResolver) Resolve(_, _ string) (storage.Store, Policy) {
	return *r.st.Load(), DefaultLimits().DefaultPolicy()
}

// TestWaitAcrossMoveAnswersFromTheNewStore: a Reserve waiting when a reload
// moves its namespace answers from the store the namespace is routed to
// now, not from the old one, which is out of reach (README: a key held
// across the move is not held in the new store).
func TestWaitAcrossMoveAnswersFromTheNewStore(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	oldStore := &faultStore{Store: memory.New(memory.WithClock(clock), memory.WithSweepInterval(0))}
	newStore := memory.New(memory.WithClock(clock), memory.WithSweepInterval(0))
	t.Cleanup(func() { newStore.Close() })
	res := &movingResolver{}
	var s storage.Store = oldStore
	res.st.Store(&s)
	e := newEnvOn(t, clock, oldStore, WithPolicyResolver(res))
	ctx := testContext(t)

	ch := startWaiter(ctx, t, e, "k", 30*time.Second, 20*time.Second)
	var n storage.Store = newStore
	res.st.Store(&n)
	// A retry after the move runs and completes in the new store.
	r, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "k", LeaseTtl: durationpb.New(30 * time.Second)})
	if err != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
		t.Fatalf("Reserve() after the move = %v, %v; want RESERVED", r, err)
	}
	if _, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: testNS, Key: "k", Token: r.GetRecord().GetToken(), Result: &idemv1.Result{Body: []byte("done")}}); err != nil {
		t.Fatal(err)
	}
	// The fake clock never moves: a waiter woken but reading the old store
	// sleeps again; end its wait then, so its answer shows.
	bctx, stop := context.WithCancel(ctx)
	defer stop()
	asleep := make(chan error, 1)
	go func() { asleep <- clock.BlockUntilContext(bctx, healthTickers+2) }()
	var a reserveAnswer
	select {
	case a = <-ch:
	case err := <-asleep:
		if err != nil {
			t.Fatal(err)
		}
		clock.Advance(20 * time.Second)
		a = <-ch
	}
	if got := outcome(t, a); got != idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED || string(a.resp.GetRecord().GetResult().GetBody()) != "done" {
		t.Errorf("waiting Reserve() across the move = %v, want COMPLETED with the new store's result", a.resp)
	}
}
