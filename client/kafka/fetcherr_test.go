package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/idemhq/idem/client/consumer"
	"github.com/idemhq/idem/client/kafka"
)

// newOnePartition starts kfake with the topic in one partition holding n
// records.
func newOnePartition(ctx context.Context, t *testing.T, n int) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	p, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := range n {
		if err := p.ProduceSync(ctx, &kgo.Record{Value: fmt.Appendf(nil, "order-%03d", i)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// fetchErrors collects what WithFetchErrorObserver reports.
type fetchErrors struct {
	mu   sync.Mutex
	errs []error
}

func (f *fetchErrors) observe(_ string, _ int32, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, err)
}

func (f *fetchErrors) has(match func(error) bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, err := range f.errs {
		if match(err) {
			return true
		}
	}
	return false
}

// TestGroupSessionErrorKeepsConsuming: the member's first join is refused,
// so kgo injects an ErrGroupSession into a poll and joins again by itself.
// Run must report it and go on consuming rather than return.
func TestGroupSessionErrorKeepsConsuming(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	c := newOnePartition(ctx, t, 2)
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.JoinGroup}, Group: "projector", Err: kerr.GroupAuthorizationFailed})
	cl := newGroupClient(t, c.ListenAddrs(), "projector")
	defer cl.CloseAllowingRebalance()

	all := make(chan struct{})
	var once sync.Once
	var fe fetchErrors
	kc, err := kafka.New(consumer.New(newIdem(t)), cl, kafka.WithNamespace("orders-projector"),
		kafka.WithFetchErrorObserver(fe.observe),
		kafka.WithObserver(func(r *kgo.Record, res consumer.Result) {
			if r.Offset == 1 && res.Ack() {
				once.Do(func() { close(all) })
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	runUntil(ctx, t, kc, all, "before consuming the topic; want it to rejoin and go on")
	if !fe.has(func(err error) bool {
		_, ok := errors.AsType[*kgo.ErrGroupSession](err)
		return ok && errors.Is(err, kerr.GroupAuthorizationFailed)
	}) {
		t.Errorf("fetch errors observed = %v, want the ErrGroupSession of the refused join", fe.errs)
	}
}

// TestDataLossKeepsConsuming: after the topic was consumed, a fetch answers
// OFFSET_OUT_OF_RANGE above the log start, as after an unclean leader
// election; kgo resets to the start and injects an ErrDataLoss. Run must
// report it and go on: the records read again are duplicates.
func TestDataLossKeepsConsuming(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	c := newOnePartition(ctx, t, 2)
	cl := newGroupClient(t, c.ListenAddrs(), "projector")
	defer cl.CloseAllowingRebalance()

	again := make(chan struct{})
	var deliveries int
	var fe fetchErrors
	idem := consumer.New(newIdem(t))
	kc, err := kafka.New(idem, cl, kafka.WithNamespace("orders-projector"),
		kafka.WithFetchErrorObserver(fe.observe),
		kafka.WithObserver(func(r *kgo.Record, res consumer.Result) {
			if r.Offset != 1 || !res.Ack() {
				return
			}
			// Run's goroutine: no lock needed.
			switch deliveries++; deliveries {
			case 1:
				c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: topic, Partitions: []int32{0}, Err: kerr.OffsetOutOfRange})
			case 2:
				close(again)
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	runUntil(ctx, t, kc, again, "after the data loss; want it to go on from where kgo reset")
	if !fe.has(func(err error) bool { _, ok := errors.AsType[*kgo.ErrDataLoss](err); return ok }) {
		t.Errorf("fetch errors observed = %v, want an ErrDataLoss", fe.errs)
	}
	if got := idem.Stats().Duplicates.Load(); got != 2 {
		t.Errorf("Stats().Duplicates = %d, want 2 (the records read again)", got)
	}
}

// TestFetchErrorStopsRun: a fetch error kgo does not recover from by itself
// (here the topic's authorization) needs the operator: Run returns it.
func TestFetchErrorStopsRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	c := newOnePartition(ctx, t, 1)
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: topic, Err: kerr.TopicAuthorizationFailed, Count: -1})
	cl := newGroupClient(t, c.ListenAddrs(), "projector")
	defer cl.CloseAllowingRebalance()
	var fe fetchErrors
	kc, err := kafka.New(consumer.New(newIdem(t)), cl, kafka.WithNamespace("orders-projector"), kafka.WithFetchErrorObserver(fe.observe))
	if err != nil {
		t.Fatal(err)
	}
	err = kc.Run(ctx, func(context.Context, *kgo.Record) error { return nil })
	if !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Errorf("Run() = %v, want the fetch's TOPIC_AUTHORIZATION_FAILED", err)
	}
	if len(fe.errs) != 0 {
		t.Errorf("fetch errors observed = %v, want none (Run returned it)", fe.errs)
	}
}

// runUntil runs kc with a handler that succeeds until reached is closed,
// failing the test if Run returns first (early says why that is wrong),
// then stops it and wants context.Canceled.
func runUntil(ctx context.Context, t *testing.T, kc *kafka.Consumer, reached <-chan struct{}, early string) {
	t.Helper()
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- kc.Run(rctx, func(context.Context, *kgo.Record) error { return nil }) }()
	select {
	case <-reached:
	case err := <-done:
		t.Fatalf("Run() = %v %s", err, early)
	case <-ctx.Done():
		t.Fatal("Run() never got there")
	}
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run() = %v, want context.Canceled", err)
	}
}
