package natsjs_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/idemhq/idem"
	"github.com/idemhq/idem/client"
	"github.com/idemhq/idem/client/consumer"
	"github.com/idemhq/idem/client/natsjs"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// downService is an idem that cannot be reached for its first down
// BatchReserve calls.
type downService struct {
	client.Service
	down  int64
	calls atomic.Int64
}

func (s *downService) BatchReserve(ctx context.Context, req *idemv1.BatchReserveRequest) (*idemv1.BatchReserveResponse, error) {
	if s.calls.Add(1) <= s.down {
		return nil, fmt.Errorf("%w: connection refused", idem.ErrUnavailable)
	}
	return s.Service.BatchReserve(ctx, req)
}

// TestIdemOutageSpendsNoDelivery: while idem cannot be reached nothing of a
// batch was reserved or run. Naking it then spends one delivery of every
// message per try, a few a second: a consumer with MaxDeliver drops its
// whole backlog within seconds of an idem outage, and one without it
// cycles the backlog through NATS at full speed. The batch is held (in
// progress) and tried again instead, so the message is handled on its
// first delivery.
func TestIdemOutageSpendsNoDelivery(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	jc := explicitConsumer(ctx, t, 1)
	svc := &downService{Service: newIdem(t), down: 3}
	settled := make(chan uint64, 1)
	c := natsjs.New(consumer.New(svc), jc, natsjs.WithBatch(10, 100*time.Millisecond), natsjs.WithNakDelay(5*time.Millisecond),
		natsjs.WithObserver(func(m jetstream.Msg, r consumer.Result) {
			if r.Outcome == consumer.Processed {
				md, _ := m.Metadata()
				settled <- md.NumDelivered
			}
		}))
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx, func(context.Context, jetstream.Msg) error { return nil }) }()
	var delivered uint64
	select {
	case delivered = <-settled:
	case err := <-done:
		t.Fatalf("Run() = %v during an idem outage, want it to wait for idem", err)
	case <-ctx.Done():
		t.Fatal("the message was never processed")
	}
	stop()
	<-done
	if delivered != 1 {
		t.Errorf("processed on delivery %d, want 1 (each nak spends one of MaxDeliver)", delivered)
	}
	if n := svc.calls.Load(); n != svc.down+1 {
		t.Errorf("BatchReserve calls = %d, want %d", n, svc.down+1)
	}
}

// refusingService refuses every BatchReserve with err.
type refusingService struct {
	client.Service
	err error
}

func (s refusingService) BatchReserve(context.Context, *idemv1.BatchReserveRequest) (*idemv1.BatchReserveResponse, error) {
	return nil, s.err
}

// TestRefusedBatchStopsRun: a batch idem refuses for good (a credential it
// does not accept, a namespace over its limits) would be held and tried
// again for ever, its messages kept in progress; Run stops with the
// refusal instead, as it does for a consumer without a namespace.
func TestRefusedBatchStopsRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	jc := explicitConsumer(ctx, t, 1)
	svc := refusingService{Service: newIdem(t), err: fmt.Errorf("%w: token revoked", idem.ErrUnauthenticated)}
	c := natsjs.New(consumer.New(svc), jc, natsjs.WithBatch(10, 100*time.Millisecond), natsjs.WithNakDelay(5*time.Millisecond))
	err := c.Run(ctx, func(context.Context, jetstream.Msg) error { return nil })
	if !errors.Is(err, idem.ErrUnauthenticated) {
		t.Errorf("Run() = %v, want the refusal (ErrUnauthenticated)", err)
	}
}

// TestDeletedConsumerStopsRun: a consumer deleted between pulls is not
// told to the next pull, which only times out; Run polled it for ever.
func TestDeletedConsumerStopsRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	_, stream, _ := newStream(ctx, t)
	jc, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "gone", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.DeleteConsumer(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	c := natsjs.New(consumer.New(newIdem(t)), jc, natsjs.WithBatch(10, 100*time.Millisecond))
	err = c.Run(ctx, func(context.Context, jetstream.Msg) error { return nil })
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Errorf("Run() on a deleted consumer = %v, want ErrConsumerNotFound", err)
	}
}
