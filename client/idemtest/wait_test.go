package idemtest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/idemhq/idem/client"
	"github.com/idemhq/idem/client/idemtest"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// A Reserve that waits for a held key waits on the fake clock, as the
// package documentation says: advancing past its wait ends it with the
// outcome at that moment.
func TestWaitEndsWhenTheClockPassesIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	idem := idemtest.New(t)
	svc := idem.Local()
	req := &idemv1.ReserveRequest{Namespace: "ns", Key: "k", LeaseTtl: durationpb.New(time.Minute)}
	if r, err := svc.Reserve(ctx, req); err != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
		t.Fatalf("Reserve() = %v, %v; want RESERVED", r.GetOutcome(), err)
	}
	type answer struct {
		r   *idemv1.ReserveResponse
		err error
	}
	got := make(chan answer, 1)
	go func() {
		r, err := svc.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k", Wait: durationpb.New(5 * time.Second)})
		got <- answer{r, err}
	}()
	// Two timers on the clock (the store's sweep ticker, the wait's end and
	// its next poll are the ones there can be) mean the wait's end is set.
	if err := idem.Clock.(interface {
		BlockUntilContext(context.Context, int) error
	}).BlockUntilContext(ctx, 2); err != nil {
		t.Fatalf("the Reserve never waited: %v", err)
	}
	idem.Advance(5 * time.Second)
	select {
	case a := <-got:
		if a.err != nil || a.r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_IN_PROGRESS {
			t.Errorf("waiting Reserve() = %v, %v; want IN_PROGRESS once the clock passed its wait", a.r.GetOutcome(), a.err)
		}
	case <-ctx.Done():
		t.Fatal("waiting Reserve() did not end when the clock passed its wait")
	}
}

// Dial serves with idemd's gRPC server and so refuses, as idemd does, a
// request larger than idemd reads (the client, told idemd reads more,
// sends it whole instead of splitting it).
func TestDialRefusesWhatIdemdRefuses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	idem := idemtest.New(t)
	items := make([]*idemv1.BatchCompleteRequest_Item, 5)
	for i := range items {
		items[i] = &idemv1.BatchCompleteRequest_Item{Key: string(rune('a' + i)), Token: 1, Result: &idemv1.Result{Body: make([]byte, 1<<20-64)}}
	}
	_, err := idem.Dial(t, client.WithMaxRequestBytes(8<<20)).BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: "ns", Items: items})
	if !errors.Is(err, client.ErrResourceExhausted) {
		t.Errorf("BatchComplete() of 5 MiB over Dial error = %v, want ErrResourceExhausted", err)
	}
}
