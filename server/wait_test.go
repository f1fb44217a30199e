package server

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/storage"
)

type reserveAnswer struct {
	resp *idemv1.ReserveResponse
	err  error
}

// startWaiter holds key (token 1) and starts a Reserve that waits for it,
// returning once that Reserve sleeps on the fake clock.
func startWaiter(ctx context.Context, t *testing.T, e *testEnv, key string, lease, wait time.Duration) <-chan reserveAnswer {
	t.Helper()
	if _, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: key, LeaseTtl: durationpb.New(lease)}); err != nil {
		t.Fatal(err)
	}
	ch := make(chan reserveAnswer, 1)
	go func() {
		r, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: key, LeaseTtl: durationpb.New(lease), Wait: durationpb.New(wait)})
		ch <- reserveAnswer{r, err}
	}()
	// The waiter's end timer and poll timer, besides the health ticker.
	if err := e.clock.BlockUntilContext(ctx, healthTickers+2); err != nil {
		t.Fatalf("waiter never slept: %v", err)
	}
	return ch
}

func outcome(t *testing.T, a reserveAnswer) idemv1.ReserveOutcome {
	t.Helper()
	if a.err != nil {
		t.Fatalf("waiting Reserve() error = %v", a.err)
	}
	return a.resp.GetOutcome()
}

func TestWaitWokenByCompleteInProcess(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	ch := startWaiter(ctx, t, e, "k", 30*time.Second, 20*time.Second)
	// The fake clock never moves, so no poll fires: only the notification can wake it.
	if _, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: testNS, Key: "k", Token: 1, Result: &idemv1.Result{Body: []byte("done")}}); err != nil {
		t.Fatal(err)
	}
	a := <-ch
	if got := outcome(t, a); got != idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED {
		t.Fatalf("waiting Reserve() outcome = %v, want COMPLETED", got)
	}
	if got := string(a.resp.GetRecord().GetResult().GetBody()); got != "done" {
		t.Errorf("result body = %q, want %q", got, "done")
	}
	if n := e.svc.notifier.size(); n != 0 {
		t.Errorf("notifier holds %d entries after the wait, want 0", n)
	}
}

func TestWaitWokenByReleaseInProcess(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	ch := startWaiter(ctx, t, e, "k", 30*time.Second, 20*time.Second)
	if _, err := e.idem.Release(ctx, &idemv1.ReleaseRequest{Namespace: testNS, Key: "k", Token: 1}); err != nil {
		t.Fatal(err)
	}
	a := <-ch
	if got := outcome(t, a); got != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED || a.resp.GetRecord().GetToken() != 2 {
		t.Errorf("waiting Reserve() = %v, want RESERVED with token 2", a.resp)
	}
}

func TestWaitFindsOtherReplicasCompleteByPolling(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	ch := startWaiter(ctx, t, e, "k", 30*time.Second, 20*time.Second)
	// Another replica completes: straight on the store, no notification.
	if _, err := e.store.Complete(ctx, storage.CompleteParams{ID: storageID("k"), Token: 1, Result: &storage.Result{Body: []byte("elsewhere")}, Retention: time.Hour}); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-ch:
		t.Fatalf("waiter answered %v before any poll", a.resp)
	default:
	}
	e.clock.Advance(e.svc.opts.pollMin)
	a := <-ch
	if got := outcome(t, a); got != idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED {
		t.Fatalf("waiting Reserve() outcome = %v, want COMPLETED", got)
	}
	if got := string(a.resp.GetRecord().GetResult().GetBody()); got != "elsewhere" {
		t.Errorf("result body = %q, want %q", got, "elsewhere")
	}
}

func TestWaitPollBacksOff(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	ch := startWaiter(ctx, t, e, "k", 30*time.Second, 20*time.Second)
	// Each empty poll doubles the sleep: 10ms, 20ms, 40ms, ...
	for _, d := range []time.Duration{10, 20, 40, 80, 160, 250, 250} {
		e.clock.Advance(d * time.Millisecond)
		if err := e.clock.BlockUntilContext(ctx, healthTickers+2); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.store.Complete(ctx, storage.CompleteParams{ID: storageID("k"), Token: 1, Retention: time.Hour}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(249 * time.Millisecond)
	select {
	case a := <-ch:
		t.Fatalf("waiter polled before its 250ms backoff: %v", a.resp)
	case <-time.After(20 * time.Millisecond):
	}
	e.clock.Advance(time.Millisecond)
	if got := outcome(t, <-ch); got != idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED {
		t.Errorf("outcome = %v, want COMPLETED", got)
	}
}

func TestWaitTakesOverAtLeaseEnd(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	ch := startWaiter(ctx, t, e, "k", 2*time.Second, 20*time.Second)
	// Advance in poll-sized steps to the lease's end; no step past it is needed.
	deadline := e.clock.Now().Add(2 * time.Second)
	for e.clock.Now().Before(deadline) {
		select {
		case a := <-ch:
			t.Fatalf("waiter answered %v before the lease ended", a.resp)
		default:
		}
		e.clock.Advance(250 * time.Millisecond)
		if e.clock.Now().Before(deadline) {
			if err := e.clock.BlockUntilContext(ctx, healthTickers+2); err != nil {
				t.Fatal(err)
			}
		}
	}
	e.clock.Advance(time.Millisecond)
	a := <-ch
	if got := outcome(t, a); got != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED || a.resp.GetRecord().GetToken() != 2 {
		t.Errorf("waiting Reserve() = %v, want RESERVED token 2 (takeover)", a.resp)
	}
}

func TestWaitEndsWithCurrentOutcome(t *testing.T) {
	e := newEnv(t, WithWaitPolling(time.Hour, time.Hour))
	ctx := testContext(t)
	ch := startWaiter(ctx, t, e, "k", 30*time.Second, 5*time.Second)
	e.clock.Advance(5 * time.Second)
	if got := outcome(t, <-ch); got != idemv1.ReserveOutcome_RESERVE_OUTCOME_IN_PROGRESS {
		t.Errorf("outcome after the wait = %v, want IN_PROGRESS", got)
	}
	if n := e.svc.notifier.size(); n != 0 {
		t.Errorf("notifier holds %d entries, want 0", n)
	}
}

func TestWaitStopsBeforeCallerDeadline(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	if _, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "k"}); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	r, err := e.idem.Reserve(short, &idemv1.ReserveRequest{Namespace: testNS, Key: "k", Wait: durationpb.New(20 * time.Second)})
	if err != nil {
		t.Fatalf("Reserve() with a short deadline error = %v, want an IN_PROGRESS answer", err)
	}
	if got := r.GetOutcome(); got != idemv1.ReserveOutcome_RESERVE_OUTCOME_IN_PROGRESS {
		t.Errorf("outcome = %v, want IN_PROGRESS", got)
	}
}

func TestWaitBoundedByMaxWaiters(t *testing.T) {
	e := newEnv(t, WithMaxWaiters(0))
	ctx := testContext(t)
	if _, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "k"}); err != nil {
		t.Fatal(err)
	}
	r, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "k", Wait: durationpb.New(20 * time.Second)})
	if err != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_IN_PROGRESS {
		t.Errorf("Reserve() over the waiter limit = %v, %v, want IN_PROGRESS at once", r, err)
	}
}

func TestCloseEndsWaiters(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	ch := startWaiter(ctx, t, e, "k", 30*time.Second, 20*time.Second)
	e.svc.Close()
	if got := outcome(t, <-ch); got != idemv1.ReserveOutcome_RESERVE_OUTCOME_IN_PROGRESS {
		t.Errorf("outcome after Close = %v, want IN_PROGRESS", got)
	}
}

func TestForceReleaseWakesWaiter(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	ch := startWaiter(ctx, t, e, "k", 30*time.Second, 20*time.Second)
	if _, err := e.admin.ForceRelease(ctx, &idemv1.ForceReleaseRequest{Namespace: testNS, Key: "k"}); err != nil {
		t.Fatal(err)
	}
	if got := outcome(t, <-ch); got != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
		t.Errorf("outcome after ForceRelease = %v, want RESERVED", got)
	}
}
