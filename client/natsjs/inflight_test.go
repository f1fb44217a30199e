package natsjs_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/idemhq/idem/client/consumer"
	"github.com/idemhq/idem/client/natsjs"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// seenSet records which messages a handler ran to success.
type seenSet struct {
	mu   sync.Mutex
	seen map[string]int
}

func (s *seenSet) add(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[string]int{}
	}
	s.seen[id]++
}

// waitFor polls until ids were all seen or ctx ends.
func (s *seenSet) waitFor(ctx context.Context, ids ...string) map[string]int {
	for {
		s.mu.Lock()
		all := true
		for _, id := range ids {
			all = all && s.seen[id] > 0
		}
		out := map[string]int{}
		for k, v := range s.seen {
			out[k] = v
		}
		s.mu.Unlock()
		if all {
			return out
		}
		select {
		case <-ctx.Done():
			return out
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestInFlightIsNakedUnderSkipAndAck: JetStream acks by stream sequence, so
// acking a redelivery that found its message in flight acks the holder's
// delivery too; if the holder then fails or dies, nothing redelivers it.
// The adapter naks in-flight messages whatever the InFlightPolicy.
func TestInFlightIsNakedUnderSkipAndAck(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	js, stream, subject := newStream(ctx, t)
	publish(ctx, t, js, subject, 2)
	svc := newIdem(t)
	// A holder that died mid-handler, its lease still running.
	if _, err := svc.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "order-000", LeaseTtl: durationpb.New(time.Second)}); err != nil {
		t.Fatal(err)
	}
	jc, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	c := natsjs.New(consumer.New(svc, consumer.WithInFlightPolicy(consumer.SkipAndAck)), jc,
		natsjs.WithNamespace("ns"), natsjs.WithBatch(10, 100*time.Millisecond), natsjs.WithNakDelay(50*time.Millisecond))
	var s seenSet
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- c.Run(rctx, func(ctx context.Context, m jetstream.Msg) error {
			s.add(string(m.Data()))
			return nil
		})
	}()
	got := s.waitFor(ctx, "order-000", "order-001")
	stop()
	<-done
	if got["order-000"] != 1 || got["order-001"] != 1 {
		t.Errorf("handler ran %v, want order-000 (after the holder's lease) and order-001 once each", got)
	}
}

// progressConsumer counts, on progress, the in-progress acks sent for the
// messages it fetched.
type progressConsumer struct {
	jetstream.Consumer
	progress chan<- struct{}
}

func (c progressConsumer) Fetch(n int, opts ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	b, err := c.Consumer.Fetch(n, opts...)
	if err != nil {
		return nil, err
	}
	msgs := make(chan jetstream.Msg)
	go func() {
		defer close(msgs)
		for m := range b.Messages() {
			msgs <- progressMsg{Msg: m, progress: c.progress}
		}
	}()
	return reasonBatch{MessageBatch: b, msgs: msgs}, nil
}

type progressMsg struct {
	jetstream.Msg
	progress chan<- struct{}
}

func (m progressMsg) InProgress() error {
	err := m.Msg.InProgress()
	select {
	case m.progress <- struct{}{}:
	default:
	}
	return err
}

// TestLongHandlerKeepsAckWait: while a handler outlives AckWait, the
// adapter must tell JetStream the message is in progress. Otherwise it is
// redelivered to another instance, found in flight and nak'ed, spending a
// delivery: with MaxDeliver 2 the holder's transient failure then has no
// delivery left, and the message is never processed. The slow handler
// runs until three in-progress acks went out (1.5 AckWait: every half
// AckWait), or until the redelivery it must prevent shows up.
func TestLongHandlerKeepsAckWait(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	js, stream, subject := newStream(ctx, t)
	publish(ctx, t, js, subject, 1)
	jc, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Second, MaxDeliver: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	idem := consumer.New(newIdem(t), consumer.WithLease(2*time.Second))
	progress := make(chan struct{}, 16)
	redelivered := make(chan struct{})
	var once sync.Once
	succeeded := make(chan struct{}, 2)
	var s seenSet
	var mu sync.Mutex
	first := true
	handler := func(ctx context.Context, m jetstream.Msg) error {
		mu.Lock()
		slow := first
		first = false
		mu.Unlock()
		if slow {
			for range 3 {
				select {
				case <-progress:
				case <-redelivered:
					return errors.New("downstream timed out")
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return errors.New("downstream timed out")
		}
		s.add(string(m.Data()))
		succeeded <- struct{}{}
		return nil
	}
	observe := natsjs.WithObserver(func(_ jetstream.Msg, r consumer.Result) {
		if r.Outcome == consumer.InFlight {
			once.Do(func() { close(redelivered) })
		}
	})
	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 2 { // two instances of one durable consumer
		c := natsjs.New(idem, progressConsumer{Consumer: jc, progress: progress},
			natsjs.WithBatch(10, 100*time.Millisecond), natsjs.WithNakDelay(50*time.Millisecond), observe)
		wg.Go(func() { _ = c.Run(rctx, handler) })
	}
	select {
	case <-succeeded:
	case <-redelivered:
		t.Error("order-000 was redelivered while its handler ran: AckWait was not kept")
	case <-ctx.Done():
		t.Error("order-000 was never processed")
	}
	stop()
	wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.seen["order-000"]; n > 1 {
		t.Errorf("handler succeeded %d times for order-000, want once", n)
	}
}
