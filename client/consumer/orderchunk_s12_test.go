package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/idemhq/idem/client/consumer"
)

// TestHandleEachOrderAcrossChunks: HandleEach keeps the order of messages
// sharing an OrderKey, and HandleBatch splits a slice longer than MaxBatch
// into several round trips. A message of the first chunk that must be
// tried again holds back the later messages of its key in the next chunks
// too, or they take effect before it.
func TestHandleEachOrderAcrossChunks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	e := newEnv(t)
	c := consumer.New(e)
	msgs := make([]consumer.Message, consumer.MaxBatch+2)
	for i := range msgs {
		msgs[i] = consumer.Message{ID: fmt.Sprintf("m-%d", i), OrderKey: "t/0"}
	}
	msgs[len(msgs)-1].OrderKey = "t/1" // another key: not held back
	var ran []string
	results, err := c.HandleEach(ctx, ns, msgs, func(_ context.Context, m consumer.Message) error {
		ran = append(ran, m.ID)
		if m.ID == "m-0" {
			return errors.New("downstream unavailable") // transient: to be tried again
		}
		return nil
	})
	if err != nil {
		t.Fatalf("HandleEach() error = %v", err)
	}
	if got := results[0].Outcome; got != consumer.Released {
		t.Fatalf("m-0 outcome = %v, want released", got)
	}
	for i := 1; i < len(msgs)-1; i++ {
		if results[i].Outcome != consumer.Released || results[i].Ack() {
			t.Errorf("%s (after m-0, which is to be tried again) outcome = %v (ack %v), want released, not acked", msgs[i].ID, results[i].Outcome, results[i].Ack())
			break
		}
	}
	if got := results[len(msgs)-1].Outcome; got != consumer.Processed {
		t.Errorf("last message (its own order key) outcome = %v, want processed", got)
	}
	if len(ran) != 2 {
		t.Errorf("handler ran %d times, want 2 (m-0 and the other key's message)", len(ran))
	}
}
