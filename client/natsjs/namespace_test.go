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

// noInfoConsumer is a consumer that does not know its configuration yet,
// as an ordered consumer before its first fetch.
type noInfoConsumer struct {
	jetstream.Consumer
	fetches atomic.Int64
}

func (*noInfoConsumer) CachedInfo() *jetstream.ConsumerInfo { return nil }

func (c *noInfoConsumer) Fetch(int, ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	c.fetches.Add(1)
	return nil, errors.New("fetched")
}

// TestRunWithoutNamespace: with no namespace to dedupe in, every message
// would fail to reserve and be nak'ed (dropped, on a consumer without
// acks) while Run went on. Run refuses at once and says why.
func TestRunWithoutNamespace(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js := &noInfoConsumer{}
	c := natsjs.New(consumer.New(newIdem(t)), js)
	err := c.Run(ctx, func(context.Context, jetstream.Msg) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "namespace") {
		t.Errorf("Run() = %v, want an error naming the missing namespace", err)
	}
	if n := js.fetches.Load(); n != 0 {
		t.Errorf("Run fetched %d times before refusing", n)
	}
}
