package kafka_test

import (
	"context"
	"log"
	"os/signal"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemhq/idem/client"
	"github.com/idemhq/idem/client/consumer"
	"github.com/idemhq/idem/client/kafka"
)

// A projector that applies each order event once, however often the group
// sees it. It needs an idemd at localhost:7070 and a Kafka broker at
// localhost:9092; it runs until interrupted.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	idemc, err := client.New("localhost:7070", client.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer idemc.Close()

	cl, err := kgo.NewClient(
		kgo.SeedBrokers("localhost:9092"),
		kgo.ConsumerGroup("orders-projector"),
		kgo.ConsumeTopics("orders"),
		kgo.DisableAutoCommit(), // offsets are committed after idem recorded the outcome
		kgo.BlockRebalanceOnPoll(),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer cl.CloseAllowingRebalance()

	dedupe := consumer.New(idemc, consumer.WithLease(time.Minute))
	c, err := kafka.New(dedupe, cl, kafka.WithHeaderID("event-id"))
	if err != nil {
		log.Fatal(err)
	}
	err = c.Run(ctx, func(ctx context.Context, r *kgo.Record) error {
		token, _ := client.TokenFromContext(ctx)
		// Apply r.Value downstream, passing token for fencing.
		_ = token
		return nil
	})
	if err != nil && ctx.Err() == nil {
		log.Fatal(err)
	}
}
