package natsjs_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/idemhq/idem/client/consumer"
	"github.com/idemhq/idem/client/natsjs"
)

// TestFetchWaitKeepsAckWait: a message's AckWait runs from its delivery,
// which may come early in a fetch that then waits for more. Marked in
// progress only once the fetch ended, a message whose fetch waited past
// AckWait was redelivered while still in hand, spending one of MaxDeliver:
// with MaxDeliver 2, its one transient failure then left it no retry, and
// it was dropped, never processed.
func TestFetchWaitKeepsAckWait(t *testing.T) {
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
	// The fetch asks for 10 and waits 1.6s: the one message waits in it
	// past its AckWait.
	c := natsjs.New(consumer.New(newIdem(t)), jc, natsjs.WithNamespace("ns"),
		natsjs.WithBatch(10, 1600*time.Millisecond), natsjs.WithNakDelay(50*time.Millisecond))
	var mu sync.Mutex
	var deliveries []uint64
	processed := make(chan struct{})
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() {
		done <- c.Run(rctx, func(ctx context.Context, m jetstream.Msg) error {
			md, _ := m.Metadata()
			mu.Lock()
			defer mu.Unlock()
			deliveries = append(deliveries, md.NumDelivered)
			if len(deliveries) == 1 {
				return errors.New("downstream briefly unavailable")
			}
			close(processed)
			return nil
		})
	}()
	select {
	case <-processed:
	case <-time.After(8 * time.Second):
	}
	stop()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(deliveries) < 2 {
		t.Errorf("handler ran on deliveries %v; want a retry after the transient failure (MaxDeliver 2), not the message dropped", deliveries)
	}
}
