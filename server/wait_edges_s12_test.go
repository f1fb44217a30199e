package server

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// When the holder's lease runs out under many waiters, exactly one of them
// takes the key over; the others go on waiting on the new holder's lease,
// and Close answers them IN_PROGRESS.
func TestWaitLeaseEndOneWaiterTakesOver(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	if _, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "k", LeaseTtl: durationpb.New(2 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	const n = 6
	ch := make(chan reserveAnswer, n)
	for range n {
		go func() {
			r, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "k", LeaseTtl: durationpb.New(30 * time.Second), Wait: durationpb.New(20 * time.Second)})
			ch <- reserveAnswer{r, err}
		}()
	}
	if err := e.clock.BlockUntilContext(ctx, healthTickers+2*n); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2*time.Second + time.Millisecond)
	a := <-ch
	if got := outcome(t, a); got != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED || a.resp.GetRecord().GetToken() != 2 {
		t.Fatalf("first answer = %v, want RESERVED with token 2", a.resp)
	}
	// The others sleep again on the winner's 30s lease.
	if err := e.clock.BlockUntilContext(ctx, healthTickers+2*(n-1)); err != nil {
		t.Fatal(err)
	}
	e.svc.Close()
	for range n - 1 {
		if a := <-ch; outcome(t, a) != idemv1.ReserveOutcome_RESERVE_OUTCOME_IN_PROGRESS {
			t.Errorf("other waiter = %v, want IN_PROGRESS", a.resp)
		}
	}
	assertNoWaiters(t, e)
}

// A waiter woken by the holder's Release takes over with the holder's
// last checkpoint.
func TestWaitReleaseHandsOverCheckpoint(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	ch := startWaiter(ctx, t, e, "k", 30*time.Second, 20*time.Second)
	if _, err := e.idem.Checkpoint(ctx, &idemv1.CheckpointRequest{Namespace: testNS, Key: "k", Token: 1, Phase: "charged", Data: []byte("d")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.idem.Release(ctx, &idemv1.ReleaseRequest{Namespace: testNS, Key: "k", Token: 1}); err != nil {
		t.Fatal(err)
	}
	a := <-ch
	r := a.resp.GetRecord()
	if outcome(t, a) != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED || r.GetAttempts() != 2 || r.GetCheckpoint().GetPhase() != "charged" || string(r.GetCheckpoint().GetData()) != "d" {
		t.Errorf("waiting Reserve() = %v, want RESERVED, attempt 2, with the checkpoint", a.resp)
	}
}
