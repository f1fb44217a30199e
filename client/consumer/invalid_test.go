package consumer_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/idemhq/idem/client/consumer"
)

// A message whose id idem refuses (here one longer than the 256-byte key
// limit) can never be handled: it is Invalid, not Errored, so adapters
// stop or terminate it instead of retrying it forever. A refusal of the
// consumer's own configuration, which an operator can fix and every
// message shares, stays Errored.
func TestMessageIdemRefusesIsInvalid(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	c := consumer.New(newEnv(t))
	long := strings.Repeat("m", 257)
	ran := false
	fn := func(context.Context) error { ran = true; return nil }
	r, err := c.Handle(ctx, ns, long, nil, fn)
	if r.Outcome != consumer.Invalid || !errors.Is(err, consumer.ErrInvalidMessage) || r.Ack() {
		t.Errorf("Handle(257-byte id) = %v, %v; want %v wrapping ErrInvalidMessage, not acked", r.Outcome, err, consumer.Invalid)
	}
	if _, err := c.Handle(ctx, ns, "m-ok", make([]byte, 65), fn); !errors.Is(err, consumer.ErrInvalidMessage) {
		t.Errorf("Handle(65-byte fingerprint) error = %v, want ErrInvalidMessage", err)
	}
	if ran {
		t.Error("the handler ran for a message idem refused")
	}
	if n := c.Stats().Invalid.Load(); n != 2 {
		t.Errorf("Stats().Invalid = %d, want 2", n)
	}

	var got [][]string
	rs, err := c.HandleBatch(ctx, ns, []consumer.Message{{ID: "b-1"}, {ID: long}, {ID: "b-2"}}, func(_ context.Context, b []consumer.Message) []error {
		var ids []string
		for _, m := range b {
			ids = append(ids, m.ID)
		}
		got = append(got, ids)
		return make([]error, len(b))
	})
	if err != nil {
		t.Fatalf("HandleBatch() error = %v", err)
	}
	want := []consumer.Outcome{consumer.Processed, consumer.Invalid, consumer.Processed}
	for i, w := range want {
		if rs[i].Outcome != w {
			t.Errorf("HandleBatch result %d = %v (%v), want %v", i, rs[i].Outcome, rs[i].Err, w)
		}
	}
	if !errors.Is(rs[1].Err, consumer.ErrInvalidMessage) {
		t.Errorf("HandleBatch invalid item error = %v, want ErrInvalidMessage", rs[1].Err)
	}
	if len(got) != 1 || len(got[0]) != 2 {
		t.Errorf("handler batches = %q, want one batch of the two valid messages", got)
	}

	// A lease above idem's maximum is the consumer's configuration.
	cfg := consumer.New(newEnv(t), consumer.WithLease(2*time.Hour))
	if r, _ := cfg.Handle(ctx, ns, "m-cfg", nil, fn); r.Outcome != consumer.Errored {
		t.Errorf("Handle() with a lease idem refuses = %v (%v), want %v", r.Outcome, r.Err, consumer.Errored)
	}
}
