package natsjs_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idemhq/idem/client/consumer"
	"github.com/idemhq/idem/client/natsjs"
	"github.com/idemhq/idem/server/observe"
)

// reasons records the reasons messages are terminated with: JetStream
// (2.10.4 and later) publishes them in an advisory that monitoring keeps.
type reasons struct {
	mu  sync.Mutex
	got []string
}

type reasonConsumer struct {
	jetstream.Consumer
	r *reasons
}

func (c reasonConsumer) Fetch(n int, opts ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	b, err := c.Consumer.Fetch(n, opts...)
	if err != nil {
		return nil, err
	}
	msgs := make(chan jetstream.Msg)
	go func() {
		defer close(msgs)
		for m := range b.Messages() {
			msgs <- reasonMsg{Msg: m, r: c.r}
		}
	}()
	return reasonBatch{MessageBatch: b, msgs: msgs}, nil
}

type reasonBatch struct {
	jetstream.MessageBatch
	msgs chan jetstream.Msg
}

func (b reasonBatch) Messages() <-chan jetstream.Msg { return b.msgs }

type reasonMsg struct {
	jetstream.Msg
	r *reasons
}

func (m reasonMsg) TermWithReason(reason string) error {
	m.r.mu.Lock()
	m.r.got = append(m.r.got, reason)
	m.r.mu.Unlock()
	return m.Msg.TermWithReason(reason)
}

// TestTerminationReasonHidesMessageID: a mismatched message is terminated
// with a reason that names it as idemd's logs do (key_hash), never by its
// id, which may carry personal data.
func TestTerminationReasonHidesMessageID(t *testing.T) {
	const id = "order-4711/alice@example.com"
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	// One order id published twice with different payloads: the second is a mismatch.
	got, _ := terminations(ctx, t, consumer.Mismatch, []string{id, id}, []string{"a", "b"})
	if len(got) != 1 {
		t.Fatalf("terminated %d messages (%q), want the mismatch", len(got), got)
	}
	if reason := got[0]; strings.Contains(reason, "alice@example.com") || !strings.Contains(reason, observe.HashKey(id)) {
		t.Errorf("termination reason = %q, want key_hash %s and not the id", reason, observe.HashKey(id))
	}
}

// TestInvalidMessageIsTerminated: a message whose id idem refuses (longer
// than its 256-byte key limit) is terminated, not nak'ed forever, and its
// handler never runs.
func TestInvalidMessageIsTerminated(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	got, ran := terminations(ctx, t, consumer.Invalid, []string{strings.Repeat("o", 300)}, []string{""})
	if len(got) != 1 || !strings.Contains(got[0], "refuses this message's id") {
		t.Errorf("terminated with %q, want one termination for the refused id", got)
	}
	if ran {
		t.Error("the handler ran for a message idem refused")
	}
}

// terminations publishes one message per id (with its Order-Id header and
// data), consumes them with the ids and data as id and fingerprint until
// one is settled with outcome, and returns the reasons messages were
// terminated with and whether the handler ran.
func terminations(ctx context.Context, t *testing.T, outcome consumer.Outcome, ids, data []string) (got []string, ran bool) {
	t.Helper()
	js, stream, subject := newStream(ctx, t)
	for i, id := range ids {
		m := nats.NewMsg(subject)
		m.Header.Set("Order-Id", id)
		m.Data = []byte(data[i])
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	jc, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	var r reasons
	settled := make(chan struct{})
	var once sync.Once
	c := natsjs.New(consumer.New(newIdem(t)), reasonConsumer{Consumer: jc, r: &r}, natsjs.WithNamespace("ns"), natsjs.WithBatch(10, 100*time.Millisecond),
		natsjs.WithMessageID(func(m jetstream.Msg) (string, error) {
			if id := m.Headers().Get("Order-Id"); id != "" {
				return id, nil
			}
			return "", errors.New("no order id")
		}),
		natsjs.WithFingerprint(func(m jetstream.Msg) []byte { return m.Data() }),
		natsjs.WithObserver(func(_ jetstream.Msg, res consumer.Result) {
			if res.Outcome == outcome {
				once.Do(func() { close(settled) }) // settled right after the observer
			}
		}))
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- c.Run(rctx, func(context.Context, jetstream.Msg) error { ran = true; return nil })
	}()
	select {
	case <-settled:
	case <-ctx.Done():
		t.Fatalf("no message was settled %v", outcome)
	}
	stop()
	<-done
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got, ran
}

// TestUnidentifiableMessageIsObserved: a message whose id cannot be derived
// is terminated like one idem refuses, and the observer hears of it like of
// every other message: else logs and metrics miss a message gone to the
// dead-letter policy.
func TestUnidentifiableMessageIsObserved(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	got, ran := terminations(ctx, t, consumer.Invalid, []string{""}, []string{"no id"})
	if len(got) != 1 || !strings.Contains(got[0], "no order id") {
		t.Errorf("terminated with %q, want one termination naming the missing id", got)
	}
	if ran {
		t.Error("the handler ran for a message without an id")
	}
}
