package natsjs_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/idemhq/idem/client/consumer"
	"github.com/idemhq/idem/client/natsjs"
)

// policyConsumer is a consumer with a given ack policy whose fetches fail
// at once (and are counted), so Run returns as soon as it fetches.
type policyConsumer struct {
	jetstream.Consumer
	policy  jetstream.AckPolicy
	fetches atomic.Int64
}

func (c *policyConsumer) CachedInfo() *jetstream.ConsumerInfo {
	return &jetstream.ConsumerInfo{Name: "c", Config: jetstream.ConsumerConfig{Durable: "c", AckPolicy: c.policy}}
}

var errFetched = errors.New("fetched")

func (c *policyConsumer) Fetch(int, ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	c.fetches.Add(1)
	return nil, errFetched
}

// TestRunRefusesAckAllAndNone: the adapter naks a message whose handler
// failed and acks the next one of the batch. On an AckAll consumer that
// ack acknowledges the nak'ed message too (JetStream acks every sequence up
// to it), and on an AckNone consumer nothing is ever redelivered: either
// way a failed or in-flight message is lost without a trace. Run refuses
// such consumers before fetching, as it refuses a missing namespace.
func TestRunRefusesAckAllAndNone(t *testing.T) {
	tests := []struct {
		policy     jetstream.AckPolicy
		wantRefuse bool
	}{
		{jetstream.AckAllPolicy, true},
		{jetstream.AckNonePolicy, true},
		{jetstream.AckExplicitPolicy, false},
	}
	for _, tt := range tests {
		t.Run(tt.policy.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
			defer cancel()
			js := &policyConsumer{policy: tt.policy}
			c := natsjs.New(consumer.New(newIdem(t)), js)
			err := c.Run(ctx, func(context.Context, jetstream.Msg) error { return nil })
			if !tt.wantRefuse {
				if !errors.Is(err, errFetched) {
					t.Errorf("Run() = %v, want the fetch error (an explicit-ack consumer is fetched from)", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "AckExplicit") {
				t.Errorf("Run() = %v, want an error asking for AckExplicitPolicy", err)
			}
			if n := js.fetches.Load(); n != 0 {
				t.Errorf("Run fetched %d times before refusing", n)
			}
		})
	}
}

// TestRunRefusesOrderedConsumer: an ordered consumer acknowledges nothing
// (AckNone). Given a namespace, Run must still refuse it before handling a
// message: one whose handler failed would be lost without a trace.
func TestRunRefusesOrderedConsumer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	js, stream, subject := newStream(ctx, t)
	publish(ctx, t, js, subject, 1)
	oc, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan struct{}, 1)
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	c := natsjs.New(consumer.New(newIdem(t)), oc, natsjs.WithNamespace("ns"), natsjs.WithBatch(10, 100*time.Millisecond))
	go func() {
		done <- c.Run(rctx, func(context.Context, jetstream.Msg) error {
			select {
			case ran <- struct{}{}:
			default:
			}
			return errors.New("downstream refused")
		})
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "AckExplicit") {
			t.Errorf("Run() = %v, want an error asking for AckExplicitPolicy", err)
		}
	case <-ran:
		stop()
		<-done
		t.Error("Run handled a message of an ordered consumer, whose failures nothing redelivers")
	}
}
