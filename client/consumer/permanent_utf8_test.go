package consumer_test

import (
	"context"
	"errors"
	"testing"

	"github.com/idemhq/idem/client/consumer"
)

// TestPermanentNonUTF8ErrorRecorded: a permanent failure is recorded with
// its error text as the result. idem refuses a message that is not valid
// UTF-8, so such a failure must still be recorded, not nak'ed and, once
// its lease ends, run again.
func TestPermanentNonUTF8ErrorRecorded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	c := consumer.New(newEnv(t))
	bad := func(context.Context) error { return consumer.Permanent(errors.New("payload starts with \xff\xfe")) }
	if r, err := c.Handle(ctx, ns, "m-1", nil, bad); r.Outcome != consumer.Failed || err != nil {
		t.Fatalf("Handle() = %v, %v; want %v, acked", r.Outcome, err, consumer.Failed)
	}
	if r, err := c.Handle(ctx, ns, "m-1", nil, bad); r.Outcome != consumer.Duplicate || err != nil {
		t.Errorf("redelivery: Handle() = %v, %v; want %v", r.Outcome, err, consumer.Duplicate)
	}
	rs, err := c.HandleBatch(ctx, ns, []consumer.Message{{ID: "m-2"}}, func(_ context.Context, b []consumer.Message) []error {
		return []error{consumer.Permanent(errors.New("payload starts with \xff\xfe"))}
	})
	if err != nil || rs[0].Outcome != consumer.Failed || !rs[0].Ack() {
		t.Errorf("HandleBatch() = %v (%v), %v; want %v, acked", rs[0].Outcome, rs[0].Err, err, consumer.Failed)
	}
}
