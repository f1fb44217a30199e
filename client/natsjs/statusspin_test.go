package natsjs_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/idemhq/idem/client/consumer"
	"github.com/idemhq/idem/client/natsjs"
)

// earlyStatusConsumer answers every fetch at once, with no message and a
// status.
type earlyStatusConsumer struct {
	jetstream.Consumer
	err     error
	fetches atomic.Int64
}

func (c *earlyStatusConsumer) CachedInfo() *jetstream.ConsumerInfo {
	return &jetstream.ConsumerInfo{Name: "c", Config: jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy}}
}

func (c *earlyStatusConsumer) Info(context.Context) (*jetstream.ConsumerInfo, error) {
	return c.CachedInfo(), nil
}

func (c *earlyStatusConsumer) Fetch(int, ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	c.fetches.Add(1)
	ch := make(chan jetstream.Msg)
	close(ch)
	return emptyBatch{ch: ch, err: c.err}, nil
}

type emptyBatch struct {
	ch  chan jetstream.Msg
	err error
}

func (b emptyBatch) Messages() <-chan jetstream.Msg { return b.ch }
func (b emptyBatch) Error() error                   { return b.err }

// TestEarlyFetchStatusDoesNotSpin: a status Run goes on from may end a
// pull at once. Fetching again at once, Run spun at full speed against
// NATS (and a core) for as long as the pulls were answered so (over 30,000
// fetches in 500ms); it must pull no faster than an empty fetch would.
func TestEarlyFetchStatusDoesNotSpin(t *testing.T) {
	for _, status := range []error{jetstream.ErrConsumerLeadershipChanged, jetstream.ErrServerShutdown, jetstream.ErrPinIDMismatch} {
		t.Run(status.Error(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			js := &earlyStatusConsumer{err: status}
			c := natsjs.New(consumer.New(newIdem(t)), js, natsjs.WithBatch(10, 100*time.Millisecond))
			err := c.Run(ctx, func(context.Context, jetstream.Msg) error { return nil })
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Run() = %v, want it to go on until its context ends", err)
			}
			if n := js.fetches.Load(); n > 10 {
				t.Errorf("%d fetches in 500ms with a 100ms fetch wait, want at most 10", n)
			}
		})
	}
}
