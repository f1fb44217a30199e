package consumer_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/idemhq/idem/client"
	"github.com/idemhq/idem/client/consumer"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage/memory"
)

// TestOthersLeaseLossIsNotFinal: when one message of a batch loses its
// lease, the handler of another message still running is cancelled; its
// error (the context's) means its work is unfinished. A classifier that
// deems unknown errors final must not complete that message as failed,
// never to run again: it is released for the redelivery.
func TestOthersLeaseLossIsNotFinal(t *testing.T) {
	const lease = 10 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	sc := clockwork.NewFakeClock()
	st := memory.New(memory.WithClock(sc), memory.WithSweepInterval(0))
	srv, err := server.New(st)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	defer srv.Close()
	svc := client.Local(srv)
	hb := clockwork.NewFakeClock()
	c := consumer.New(svc, consumer.WithLease(lease), consumer.WithClock(hb),
		consumer.WithPermanentErrors(func(error) bool { return true }))

	running := make(chan struct{})
	type out struct {
		res []consumer.Result
		err error
	}
	done := make(chan out, 1)
	go func() {
		res, err := c.HandleEach(ctx, ns, []consumer.Message{{ID: "A"}, {ID: "B"}}, func(ctx context.Context, m consumer.Message) error {
			if m.ID == "A" {
				return nil
			}
			close(running)
			<-ctx.Done() // B's work is cut short
			return ctx.Err()
		})
		done <- out{res, err}
	}()
	<-running
	// A is force-released and taken over elsewhere; the next heartbeat
	// finds its lease lost and cancels the batch's context.
	if _, err := srv.ForceRelease(ctx, &idemv1.ForceReleaseRequest{Namespace: ns, Key: "A"}); err != nil {
		t.Fatal(err)
	}
	if r, err := svc.Reserve(ctx, &idemv1.ReserveRequest{Namespace: ns, Key: "A"}); err != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
		t.Fatalf("takeover of A = %v, %v", r.GetOutcome(), err)
	}
	if err := hb.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	hb.Advance(lease / 2)
	var o out
	select {
	case o = <-done:
	case <-ctx.Done():
		t.Fatal("HandleEach did not return after the lease loss")
	}
	if o.res[1].Outcome != consumer.Released || o.res[1].Ack() {
		t.Errorf("B, cut short by A's lease loss: outcome %v (ack %v), want released, not acked", o.res[1].Outcome, o.res[1].Ack())
	}
	r, err := svc.Reserve(ctx, &idemv1.ReserveRequest{Namespace: ns, Key: "B"})
	if err != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
		t.Errorf("redelivery of B = %v, %v; want RESERVED (it never finished)", r.GetOutcome(), err)
	}
}

// TestOrderKeyHoldsBackLaterMessages: a message that is not done (failed
// transiently, or held by another attempt) holds back the later messages
// of its OrderKey, which are released without running; other keys go on.
func TestOrderKeyHoldsBackLaterMessages(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	e := newEnv(t)
	c := consumer.New(e)
	// Another attempt holds h1.
	if r, err := e.Reserve(ctx, &idemv1.ReserveRequest{Namespace: ns, Key: "h1"}); err != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
		t.Fatalf("Reserve(h1) = %v, %v", r.GetOutcome(), err)
	}
	msgs := []consumer.Message{
		{ID: "p1", OrderKey: "P"}, {ID: "q1", OrderKey: "Q"}, {ID: "h1", OrderKey: "H"},
		{ID: "p2", OrderKey: "P"}, {ID: "q2", OrderKey: "Q"}, {ID: "h2", OrderKey: "H"},
	}
	var ran []string
	results, err := c.HandleEach(ctx, ns, msgs, func(_ context.Context, m consumer.Message) error {
		ran = append(ran, m.ID)
		if m.ID == "p1" {
			return errors.New("transient")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"p1", "q1", "q2"}; !slices.Equal(ran, want) {
		t.Errorf("handler ran %v, want %v", ran, want)
	}
	want := []consumer.Outcome{consumer.Released, consumer.Processed, consumer.InFlight, consumer.Released, consumer.Processed, consumer.Released}
	for i, r := range results {
		if r.Outcome != want[i] {
			t.Errorf("%s: outcome %v, want %v", msgs[i].ID, r.Outcome, want[i])
		}
	}
	// The held-back messages are released: their retry reserves them.
	for _, id := range []string{"p2", "h2"} {
		if r, err := e.Reserve(ctx, &idemv1.ReserveRequest{Namespace: ns, Key: id}); err != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
			t.Errorf("Reserve(%s) after the batch = %v, %v; want RESERVED", id, r.GetOutcome(), err)
		}
	}
}
