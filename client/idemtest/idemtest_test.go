package idemtest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/idemhq/idem/client"
	"github.com/idemhq/idem/client/idemtest"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLocalAndDialShareRecords(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	idem := idemtest.New(t)
	local, remote := idem.Local(), idem.Dial(t)
	r, err := local.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k", LeaseTtl: durationpb.New(time.Second)})
	if err != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
		t.Fatalf("Reserve() = %v, %v; want RESERVED", r, err)
	}
	got, err := remote.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k"})
	if err != nil || got.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_IN_PROGRESS {
		t.Fatalf("remote Reserve() = %v, %v; want IN_PROGRESS", got, err)
	}
	idem.Advance(2 * time.Second)
	got, err = remote.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k"})
	if err != nil || got.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED || got.GetRecord().GetToken() != 2 {
		t.Fatalf("Reserve() after the lease = %v, %v; want RESERVED with token 2", got, err)
	}
	_, err = local.Complete(ctx, &idemv1.CompleteRequest{Namespace: "ns", Key: "k", Token: 1, Result: &idemv1.Result{}})
	if !errors.Is(err, client.ErrLeaseLost) {
		t.Errorf("stale Complete() error = %v, want ErrLeaseLost", err)
	}
}
