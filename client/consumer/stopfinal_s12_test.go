package consumer_test

import (
	"context"
	"errors"
	"testing"

	"github.com/idemhq/idem/client/consumer"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// TestHandleEachFinalBeforeStopStaysFinal: HandleEach judges a message's
// error when its handler returns. A final error (the classifier's) seen
// while the batch still ran does not hold back the later messages of its
// order key, which then take effect. A shutdown arriving later, while
// another message runs, must not turn that error transient: released, the
// message would run again on redelivery after the later ones of its key
// took effect (Kafka's partition order broken), and a message that failed
// for good would run again.
func TestHandleEachFinalBeforeStopStaysFinal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	e := newEnv(t)
	c := consumer.New(e, consumer.WithPermanentErrors(func(error) bool { return true }))
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	msgs := []consumer.Message{
		{ID: "A", OrderKey: "t/0"}, // fails for good
		{ID: "B", OrderKey: "t/0"}, // succeeds
		{ID: "C", OrderKey: "t/1"}, // cut short by the shutdown
	}
	errBad := errors.New("insufficient funds")
	results, err := c.HandleEach(rctx, ns, msgs, func(ctx context.Context, m consumer.Message) error {
		switch m.ID {
		case "A":
			return errBad
		case "B":
			return nil
		}
		stop() // the shutdown arrives while C runs
		return ctx.Err()
	})
	if err != nil {
		t.Fatalf("HandleEach() error = %v", err)
	}
	if got := results[1].Outcome; got != consumer.Processed {
		t.Fatalf("B outcome = %v, want processed", got)
	}
	if got := results[0].Outcome; got != consumer.Failed {
		t.Errorf("A (final error before the shutdown, B after it took effect) outcome = %v, want failed", got)
	}
	r, err := e.Reserve(ctx, &idemv1.ReserveRequest{Namespace: ns, Key: "A"})
	if err != nil {
		t.Fatal(err)
	}
	if r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED {
		t.Errorf("redelivery of A: Reserve() outcome = %v, want COMPLETED (never run after B)", r.GetOutcome())
	}
	if got := results[2].Outcome; got != consumer.Released {
		t.Errorf("C (cut short) outcome = %v, want released", got)
	}
}
