package server

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// A BatchComplete through this Service wakes the waiter at once: the fake
// clock never moves, so no poll can.
func TestReviewWaitWokenByBatchComplete(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	ch := startWaiter(ctx, t, e, "k", 30*time.Second, 20*time.Second)
	resp, err := e.idem.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: testNS, Items: []*idemv1.BatchCompleteRequest_Item{
		{Key: "k", Token: 1, Result: &idemv1.Result{Body: []byte("batch")}},
	}})
	if err != nil || resp.GetResults()[0].GetError() != nil {
		t.Fatalf("BatchComplete() = %v, %v", resp, err)
	}
	a := <-ch
	if got := outcome(t, a); got != idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED {
		t.Fatalf("outcome = %v, want COMPLETED", got)
	}
	assertNoWaiters(t, e)
}

func assertNoWaiters(t *testing.T, e *testEnv) {
	t.Helper()
	if n := e.svc.notifier.size(); n != 0 {
		t.Errorf("notifier holds %d records, want 0", n)
	}
	if n := e.svc.notifier.subs.Load(); n != 0 {
		t.Errorf("notifier counts %d subscriptions, want 0", n)
	}
	if n := e.svc.waiting.Load(); n != 0 {
		t.Errorf("waiting = %d, want 0", n)
	}
}

// A caller that gives up mid-wait gets its cancellation, and leaves no
// subscription or waiter count behind. The Service is called in-process, so
// its answer comes after its cleanup.
func TestReviewWaitCallerCancels(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	if _, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "k"}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	ch := make(chan reserveAnswer, 1)
	go func() {
		r, err := e.svc.Reserve(wctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "k", Wait: durationpb.New(20 * time.Second)})
		ch <- reserveAnswer{r, err}
	}()
	if err := e.clock.BlockUntilContext(ctx, healthTickers+2); err != nil {
		t.Fatal(err)
	}
	cancel()
	a := <-ch
	if status.Code(a.err) != codes.Canceled && !errors.Is(a.err, context.Canceled) {
		t.Errorf("waiting Reserve() after cancel = %v, %v; want CANCELED", a.resp, a.err)
	}
	assertNoWaiters(t, e)
}

// Many waiters on one record: each wakes on the Complete, and none is left.
func TestReviewManyWaitersWoken(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	if _, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "k"}); err != nil {
		t.Fatal(err)
	}
	const n = 8
	ch := make(chan reserveAnswer, n)
	for range n {
		go func() {
			r, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "k", Wait: durationpb.New(20 * time.Second)})
			ch <- reserveAnswer{r, err}
		}()
	}
	if err := e.clock.BlockUntilContext(ctx, healthTickers+2*n); err != nil {
		t.Fatal(err)
	}
	if _, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: testNS, Key: "k", Token: 1}); err != nil {
		t.Fatal(err)
	}
	for range n {
		if got := outcome(t, <-ch); got != idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED {
			t.Errorf("outcome = %v, want COMPLETED", got)
		}
	}
	assertNoWaiters(t, e)
}
