package natsjs_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/idemhq/idem/client/consumer"
	"github.com/idemhq/idem/client/natsjs"
)

// statusConsumer ends its first fetch, after the messages it got, with err,
// as JetStream ends a pull request with a status (409 Leadership Change,
// Server Shutdown, ...).
type statusConsumer struct {
	jetstream.Consumer
	err     error
	fetches atomic.Int64
}

func (c *statusConsumer) Fetch(n int, opts ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	b, err := c.Consumer.Fetch(n, opts...)
	if err != nil || c.fetches.Add(1) > 1 {
		return b, err
	}
	return statusBatch{MessageBatch: b, err: c.err}, nil
}

type statusBatch struct {
	jetstream.MessageBatch
	err error
}

func (b statusBatch) Error() error {
	if err := b.MessageBatch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return b.err
}

// TestTransientFetchStatusKeepsRunning: a NATS rolling restart or a
// consumer leader moving ends pull requests with a status that nats.go's
// own Consume reports and goes on from. Run must go on too, and handle the
// messages the pull got before the status, instead of stopping the
// consumer for good.
func TestTransientFetchStatusKeepsRunning(t *testing.T) {
	for _, status := range []error{jetstream.ErrConsumerLeadershipChanged, jetstream.ErrServerShutdown, jetstream.ErrNoHeartbeat, jetstream.ErrPinIDMismatch} {
		t.Run(status.Error(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
			defer cancel()
			jc := explicitConsumer(ctx, t, 3)
			var mu sync.Mutex
			acked := map[string]int{}
			all := make(chan struct{})
			c := natsjs.New(consumer.New(newIdem(t)), &statusConsumer{Consumer: jc, err: status},
				natsjs.WithBatch(10, 100*time.Millisecond), natsjs.WithObserver(func(m jetstream.Msg, r consumer.Result) {
					mu.Lock()
					defer mu.Unlock()
					if r.Ack() {
						acked[string(m.Data())]++
						if len(acked) == 3 {
							close(all)
						}
					}
				}))
			rctx, stop := context.WithCancel(ctx)
			defer stop()
			done := make(chan error, 1)
			go func() { done <- c.Run(rctx, func(context.Context, jetstream.Msg) error { return nil }) }()
			select {
			case <-all:
			case err := <-done:
				t.Fatalf("Run() = %v after a fetch ended with %q, want it to go on", err, status)
			case <-ctx.Done():
				t.Fatal("the messages were never handled")
			}
			stop()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("Run() = %v, want context.Canceled", err)
			}
			mu.Lock()
			defer mu.Unlock()
			for id, n := range acked {
				if n != 1 {
					t.Errorf("%s settled %d times, want 1", id, n)
				}
			}
		})
	}
}
