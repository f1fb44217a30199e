package kafka_test

import (
	"context"
	"errors"
	"slices"
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

// TestPartitionOrderKeptWhileOneWaits: Kafka's promise is order per
// partition. A record that must be tried again (its handler failed
// transiently, or another member, here a dead one, still holds it) holds
// back the later records of its partition: they must not take effect
// before it.
func TestPartitionOrderKeptWhileOneWaits(t *testing.T) {
	for _, tc := range []struct {
		name     string
		deadHold bool // a dead member holds order-000, its lease running
	}{
		{name: "transient failure"},
		{name: "held by a dead member", deadHold: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
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
			want := []string{"order-000", "order-001", "order-002"}
			for _, v := range want {
				if err := p.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
					t.Fatal(err)
				}
			}
			p.Close()

			svc := newIdem(t)
			if tc.deadHold {
				if _, err := svc.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "orders-projector", Key: topic + "/0/0", LeaseTtl: durationpb.New(time.Second)}); err != nil {
					t.Fatal(err)
				}
			}
			cl := newGroupClient(t, c.ListenAddrs(), "projector")
			defer cl.CloseAllowingRebalance()
			kc, err := kafka.New(consumer.New(svc), cl,
				kafka.WithNamespace("orders-projector"), kafka.WithRetryDelay(50*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var applied []string
			failed := false
			rctx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() {
				done <- kc.Run(rctx, func(ctx context.Context, r *kgo.Record) error {
					mu.Lock()
					defer mu.Unlock()
					v := string(r.Value)
					if !tc.deadHold && v == "order-000" && !failed {
						failed = true
						return errors.New("downstream briefly unavailable")
					}
					applied = append(applied, v)
					if len(applied) == len(want) {
						stop()
					}
					return nil
				})
			}()
			<-done
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(applied, want) {
				t.Errorf("records took effect in order %v, want %v (one partition)", applied, want)
			}
		})
	}
}
