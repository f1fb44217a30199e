package natsjs_test

import (
	"context"
	"log"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idemhq/idem/client"
	"github.com/idemhq/idem/client/consumer"
	"github.com/idemhq/idem/client/natsjs"
)

// A projector that applies each order event once, however often JetStream
// delivers it. It needs an idemd at localhost:7070 and a NATS server with an
// ORDERS stream; it runs until interrupted.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	idemc, err := client.New("localhost:7070", client.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer idemc.Close()

	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	jc, err := js.CreateOrUpdateConsumer(ctx, "ORDERS", jetstream.ConsumerConfig{
		Durable:   "orders-projector",
		AckPolicy: jetstream.AckExplicitPolicy,
		AckWait:   time.Minute,
	})
	if err != nil {
		log.Fatal(err)
	}

	// The lease covers one batch's processing budget; heartbeats extend it.
	dedupe := consumer.New(idemc, consumer.WithLease(30*time.Second))
	err = natsjs.New(dedupe, jc).Run(ctx, func(ctx context.Context, m jetstream.Msg) error {
		token, _ := client.TokenFromContext(ctx)
		// Write m.Data() downstream, passing token so that the downstream
		// refuses a late write of an attempt that was taken over.
		_ = token
		return nil
	})
	if err != nil && ctx.Err() == nil {
		log.Fatal(err)
	}
	log.Printf("duplicates skipped: %d", dedupe.Stats().Duplicates.Load())
}
