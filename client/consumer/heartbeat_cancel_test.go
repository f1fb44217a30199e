package consumer_test

import (
	"context"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/idemhq/idem/client/consumer"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// TestHeartbeatOutlivesContext: the consumer's context ends (shutdown, rebalance) while the handler is
// still finishing its side effect. The lease must still be extended until
// fn returns, or a redelivery elsewhere takes the message over.
func TestHeartbeatOutlivesContext(t *testing.T) {
	const lease = 10 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	e := newEnv(t)
	hb := clockwork.NewFakeClock()
	c := consumer.New(e, consumer.WithLease(lease), consumer.WithClock(hb))
	running, sawCancel, finish := make(chan struct{}), make(chan struct{}), make(chan struct{})
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := c.Handle(cctx, "ns", "m-1", nil, func(ctx context.Context) error {
			close(running)
			<-ctx.Done()
			close(sawCancel)
			<-finish // the side effect completes regardless
			return nil
		})
		done <- err
	}()
	<-running
	if err := hb.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	stop()
	<-sawCancel
	// The first tick comes after ctx ended: a heartbeat tied to ctx either
	// stops before it (no ExtendLease: the wait below fails at the test's
	// deadline) or extends with the ended ctx, which fails, and then the
	// competing Reserve below takes the message over.
	e.storeClock.Advance(lease / 2)
	hb.Advance(lease / 2)
	select {
	case <-e.extended:
	case <-ctx.Done():
		t.Fatal("no ExtendLease after the caller's context ended, though fn still runs")
	}
	e.storeClock.Advance(lease/2 + time.Second)
	resp, err := e.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "m-1"})
	if err != nil || resp.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_IN_PROGRESS {
		t.Errorf("competing Reserve() while fn runs = %v, %v; want IN_PROGRESS", resp.GetOutcome(), err)
	}
	close(finish)
	<-done
}
