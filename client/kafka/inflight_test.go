package kafka_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/idemhq/idem/client/consumer"
	"github.com/idemhq/idem/client/kafka"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// TestInFlightIsNotCommittedPast: a record another member holds (here one
// that died mid-handler, its lease still running) must not be committed
// past even under SkipAndAck: Kafka cannot redeliver one record, so once
// the offset moves on the record is lost when the holder never completes.
func TestInFlightIsNotCommittedPast(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topic))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"order-000", "order-001"} {
		if err := p.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	p.Close()

	svc := newIdem(t)
	// The dead holder of order-000 (offset 0).
	if _, err := svc.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "orders-projector", Key: topic + "/0/0", LeaseTtl: durationpb.New(time.Second)}); err != nil {
		t.Fatal(err)
	}
	cl := newGroupClient(t, c.ListenAddrs(), "projector")
	defer cl.CloseAllowingRebalance()
	kc, err := kafka.New(consumer.New(svc, consumer.WithInFlightPolicy(consumer.SkipAndAck)), cl,
		kafka.WithNamespace("orders-projector"), kafka.WithRetryDelay(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]bool{}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- kc.Run(rctx, func(ctx context.Context, r *kgo.Record) error {
			mu.Lock()
			defer mu.Unlock()
			seen[string(r.Value)] = true
			return nil
		})
	}()
	deadline := time.After(5 * time.Second) // the holder's lease is 1s
	for ok := false; !ok; {
		select {
		case <-deadline:
			ok = true
		case <-time.After(20 * time.Millisecond):
			mu.Lock()
			ok = seen["order-000"] && seen["order-001"]
			mu.Unlock()
		}
	}
	stop()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if !seen["order-000"] || !seen["order-001"] {
		t.Errorf("handler saw %v, want order-000 (taken over after the holder's lease) and order-001", seen)
	}
}
