package consumer_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/idemhq/idem/client/consumer"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// overlapEnv holds each ExtendLease until a second one is in flight, or
// until its context ends: a heartbeat that extends one lease after the
// other never gets past the first.
type overlapEnv struct {
	*env
	mu       sync.Mutex
	inFlight int
	overlap  chan struct{}
	once     sync.Once
}

func (e *overlapEnv) ExtendLease(ctx context.Context, req *idemv1.ExtendLeaseRequest) (*idemv1.ExtendLeaseResponse, error) {
	e.mu.Lock()
	e.inFlight++
	if e.inFlight >= 2 {
		e.once.Do(func() { close(e.overlap) })
	}
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.inFlight--
		e.mu.Unlock()
	}()
	select {
	case <-e.overlap:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return e.env.ExtendLease(ctx, req)
}

// A batch's heartbeat extends its leases side by side: one at a time, a
// large batch on a slow idem would let the last leases lapse before their
// turn, and their redeliveries would run beside the handler.
func TestBatchHeartbeatExtendsTogether(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	e := &overlapEnv{env: newEnv(t), overlap: make(chan struct{})}
	hb := clockwork.NewFakeClock()
	c := consumer.New(e, consumer.WithLease(10*time.Second), consumer.WithClock(hb))
	var msgs []consumer.Message
	for i := range 8 {
		msgs = append(msgs, consumer.Message{ID: fmt.Sprint("m-", i)})
	}
	running, finish := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := c.HandleBatch(ctx, ns, msgs, func(ctx context.Context, b []consumer.Message) []error {
			close(running)
			<-finish
			return make([]error, len(b))
		})
		done <- err
	}()
	<-running
	if err := hb.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	hb.Advance(5 * time.Second)
	select {
	case <-e.overlap:
	case <-ctx.Done():
		t.Fatal("the heartbeat extended one lease at a time")
	}
	close(finish)
	if err := <-done; err != nil {
		t.Fatalf("HandleBatch() error = %v", err)
	}
}
