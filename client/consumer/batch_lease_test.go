package consumer_test

import (
	"context"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/idemhq/idem/client"
	"github.com/idemhq/idem/client/consumer"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage/memory"
)

// TestBatchRepeatWithOtherFingerprintIsMismatch: a repeat of an ID inside
// one batch with another fingerprint is a Mismatch, as the same repeat in
// the next batch is, and is not acked as a duplicate (which drops it).
func TestBatchRepeatWithOtherFingerprintIsMismatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	e := newEnv(t)
	c := consumer.New(e)
	msgs := []consumer.Message{
		{ID: "m-1", Fingerprint: []byte("payload-A")},
		{ID: "m-1", Fingerprint: []byte("payload-B")},
	}
	results, err := c.HandleEach(ctx, ns, msgs, func(context.Context, consumer.Message) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	// Same message alone, in a later batch: idem says MISMATCH.
	later, _ := c.HandleEach(ctx, ns, msgs[1:], func(context.Context, consumer.Message) error { return nil })
	if later[0].Outcome != consumer.Mismatch {
		t.Fatalf("later batch outcome = %v, want mismatch", later[0].Outcome)
	}
	if results[1].Outcome != consumer.Mismatch || results[1].Ack() {
		t.Errorf("in-batch repeat with another fingerprint = %v (ack %v); want mismatch, not acked", results[1].Outcome, results[1].Ack())
	}
}

// TestBatchLeaseLossKeepsOthersExtended: when one message of a batch loses
// its lease, the others' leases are still extended while fn runs, or a
// redelivery of another message would take it over and run it beside fn.
func TestBatchLeaseLossKeepsOthersExtended(t *testing.T) {
	const lease = 10 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	sc := clockwork.NewFakeClock()
	st := memory.New(memory.WithClock(sc), memory.WithSweepInterval(0))
	srv, err := server.New(st)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	defer srv.Close()
	svc := &extendSignal{Service: client.Local(srv), extended: make(chan string, 16)}
	hb := clockwork.NewFakeClock()
	c := consumer.New(svc, consumer.WithLease(lease), consumer.WithClock(hb))

	running, sawCancel, finish := make(chan struct{}), make(chan struct{}), make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.HandleBatch(ctx, ns, []consumer.Message{{ID: "A"}, {ID: "B"}}, func(ctx context.Context, b []consumer.Message) []error {
			close(running)
			<-ctx.Done()
			close(sawCancel)
			<-finish // B's side effect is still being written
			return make([]error, len(b))
		})
	}()
	<-running
	// An operator force-releases A and its redelivery takes it over.
	if _, err := srv.ForceRelease(ctx, &idemv1.ForceReleaseRequest{Namespace: ns, Key: "A"}); err != nil {
		t.Fatal(err)
	}
	if r, err := svc.Reserve(ctx, &idemv1.ReserveRequest{Namespace: ns, Key: "A", LeaseTtl: nil}); err != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
		t.Fatalf("takeover of A = %v, %v", r.GetOutcome(), err)
	}
	// Heartbeat tick: A is lost -> fn's ctx cancelled.
	if err := hb.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	sc.Advance(lease / 2)
	hb.Advance(lease / 2)
	svc.waitExtended(ctx, t, "B")
	<-sawCancel
	// fn still runs; B must stay held. Keep ticking the heartbeat, each tick
	// once B's previous extension is in, so that the store's clock never
	// passes a lease the heartbeat would have extended in time.
	for range 3 {
		sc.Advance(lease / 2)
		hb.Advance(lease / 2)
		svc.waitExtended(ctx, t, "B")
	}
	r, err := svc.Reserve(ctx, &idemv1.ReserveRequest{Namespace: ns, Key: "B"})
	close(finish)
	<-done
	if err != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_IN_PROGRESS {
		t.Errorf("redelivery of B while the batch still processes it = %v, %v; want IN_PROGRESS", r.GetOutcome(), err)
	}
}

// extendSignal reports the key of every ExtendLease once it has returned.
type extendSignal struct {
	client.Service
	extended chan string
}

func (s *extendSignal) ExtendLease(ctx context.Context, req *idemv1.ExtendLeaseRequest) (*idemv1.ExtendLeaseResponse, error) {
	resp, err := s.Service.ExtendLease(ctx, req)
	s.extended <- req.GetKey()
	return resp, err
}

// waitExtended waits until an ExtendLease of key has returned; others'
// are skipped.
func (s *extendSignal) waitExtended(ctx context.Context, t *testing.T, key string) {
	t.Helper()
	for {
		select {
		case k := <-s.extended:
			if k == key {
				return
			}
		case <-ctx.Done():
			t.Fatalf("no ExtendLease of %s while fn still runs", key)
		}
	}
}
