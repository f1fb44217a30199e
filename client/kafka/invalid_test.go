package kafka_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemhq/idem/client/consumer"
	"github.com/idemhq/idem/client/kafka"
)

// TestInvalidRecordStopsRun: a record whose message id idem refuses
// (longer than its 256-byte key limit) would be retried in place forever
// and stall its partition; Run stops with the record's position instead,
// as for an id that cannot be derived, and the handler never runs.
func TestInvalidRecordStopsRun(t *testing.T) {
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
	if err := p.ProduceSync(ctx, &kgo.Record{Value: []byte(strings.Repeat("o", 300))}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	p.Close()
	cl := newGroupClient(t, c.ListenAddrs(), "projector")
	defer cl.CloseAllowingRebalance()
	kc, err := kafka.New(consumer.New(newIdem(t)), cl, kafka.WithNamespace("orders-projector"),
		kafka.WithMessageID(func(r *kgo.Record) (string, error) { return string(r.Value), nil }))
	if err != nil {
		t.Fatal(err)
	}
	ran := false
	err = kc.Run(ctx, func(context.Context, *kgo.Record) error { ran = true; return nil })
	if !errors.Is(err, consumer.ErrInvalidMessage) || !strings.Contains(err.Error(), "record "+topic+"/0/0") {
		t.Errorf("Run() = %v, want ErrInvalidMessage naming record %s/0/0", err, topic)
	}
	if ran {
		t.Error("the handler ran for a record idem refused")
	}
}
