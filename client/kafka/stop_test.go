package kafka_test

import (
	"context"
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemhq/idem/client/consumer"
	"github.com/idemhq/idem/client/kafka"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// TestStopDoesNotFailUnstartedRecords: Run is stopped while the first
// record of a poll runs. The next record must be released, not recorded as
// failed: with a classifier that deems unknown errors final, the stopped
// context's error would complete it, and the group, which gets it back
// uncommitted, would skip it as a duplicate though it never ran.
func TestStopDoesNotFailUnstartedRecords(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	c := newOnePartition(ctx, t, 0)
	p, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	// One produce call, one batch: both records come in one poll.
	err = p.ProduceSync(ctx, &kgo.Record{Value: []byte("order-000")}, &kgo.Record{Value: []byte("order-001")}).FirstErr()
	p.Close()
	if err != nil {
		t.Fatal(err)
	}
	cl := newGroupClient(t, c.ListenAddrs(), "projector")
	defer cl.CloseAllowingRebalance()
	svc := newIdem(t)
	idem := consumer.New(svc, consumer.WithPermanentErrors(func(error) bool { return true }))
	var observed []consumer.Outcome
	kc, err := kafka.New(idem, cl, kafka.WithNamespace("orders-projector"),
		kafka.WithObserver(func(_ *kgo.Record, r consumer.Result) { observed = append(observed, r.Outcome) }))
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	err = kc.Run(rctx, func(ctx context.Context, r *kgo.Record) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if r.Offset == 0 {
			stop() // e.g. SIGTERM while the record is handled
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run() = %v, want context.Canceled", err)
	}
	s := idem.Stats()
	if s.Released.Load()+s.Failed.Load() != 1 {
		t.Fatalf("released %d, failed %d; want the second record of the poll released", s.Released.Load(), s.Failed.Load())
	}
	if len(observed) != 2 || observed[0] != consumer.Processed || observed[1] != consumer.Released {
		t.Errorf("observed %v, want the poll's two records: processed, released", observed)
	}
	if s.Failed.Load() != 0 {
		t.Errorf("Stats().Failed = %d, want 0: the record never ran", s.Failed.Load())
	}
	resp, err := svc.Lookup(ctx, &idemv1.LookupRequest{Namespace: "orders-projector", Key: topic + "/0/1"})
	if err == nil && resp.GetRecord().GetState() == idemv1.RecordState_RECORD_STATE_COMPLETED {
		t.Errorf("record of offset 1 is COMPLETED, want it left for the redelivery")
	}
}
