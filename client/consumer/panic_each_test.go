package consumer_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/idemhq/idem/client/consumer"
)

// TestHandleEachPanicKeepsFinishedMessages: HandleEach runs its messages one
// by one (the kafka and natsjs adapters use it), so when one handler panics
// the messages before it are already done (a card charged). They must be
// completed, not released with the rest: the redelivery of the batch would
// run them again with a larger token, which no fencing refuses.
func TestHandleEachPanicKeepsFinishedMessages(t *testing.T) {
	tests := []struct {
		name string
		opts []consumer.Option
	}{
		{"default", nil},
		// The messages that panicked or never ran are released even when
		// the classifier deems every error final.
		{"every error permanent", []consumer.Option{consumer.WithPermanentErrors(func(error) bool { return true })}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { testHandleEachPanic(t, tt.opts) })
	}
}

func testHandleEachPanic(t *testing.T, opts []consumer.Option) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	e := newEnv(t)
	c := consumer.New(e, opts...)
	msgs := make([]consumer.Message, 4)
	for i := range msgs {
		msgs[i].ID = fmt.Sprintf("m-%d", i)
	}
	charged := map[string]int{}
	panicked := false
	charge := func(_ context.Context, m consumer.Message) error {
		if m.ID == "m-2" && !panicked {
			panicked = true
			panic("boom")
		}
		charged[m.ID]++
		return nil
	}
	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Errorf("recover() = %v, want the handler's panic", p)
			}
		}()
		c.HandleEach(ctx, ns, msgs, charge)
	}()
	// The broker redelivers the whole batch.
	results, err := c.HandleEach(ctx, ns, msgs, charge)
	if err != nil {
		t.Fatalf("HandleEach() after the panic = %v", err)
	}
	want := []consumer.Outcome{consumer.Duplicate, consumer.Duplicate, consumer.Processed, consumer.Processed}
	for i, r := range results {
		if r.Outcome != want[i] || !r.Ack() {
			t.Errorf("redelivery: result %d (%s) = %v, %v; want %v, acked", i, msgs[i].ID, r.Outcome, r.Err, want[i])
		}
	}
	for _, m := range msgs {
		if charged[m.ID] != 1 {
			t.Errorf("%s charged %d times, want 1", m.ID, charged[m.ID])
		}
	}
}

// TestBatchWrongErrorCountIsNotFinal: a batch handler that returns the
// wrong number of errors says nothing of which messages it handled; they
// are released for redelivery even when the classifier deems every error
// final, rather than completed as failed and acknowledged unprocessed.
func TestBatchWrongErrorCountIsNotFinal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	c := consumer.New(newEnv(t), consumer.WithPermanentErrors(func(error) bool { return true }))
	msgs := []consumer.Message{{ID: "m-0"}, {ID: "m-1"}}
	results, err := c.HandleBatch(ctx, ns, msgs, func(context.Context, []consumer.Message) []error { return nil })
	if err != nil {
		t.Fatalf("HandleBatch() error = %v", err)
	}
	for i, r := range results {
		if r.Outcome != consumer.Released || r.Ack() {
			t.Errorf("result %d = %v (ack %v), want released, not acked", i, r.Outcome, r.Ack())
		}
	}
}
