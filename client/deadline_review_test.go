package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/idemhq/idem/client"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// lateCtx is a context whose deadline has passed but whose timer has not
// yet fired: the window every deadline goes through.
type lateCtx struct{ context.Context }

func (lateCtx) Deadline() (time.Time, bool) { return time.Now().Add(-time.Millisecond), true }

func TestReviewCallerDeadlineNotABreakerFailure(t *testing.T) {
	ctx := testCtx(t)
	f := &flakyIdem{}
	c := startFlaky(t, f, client.WithRetry(1, 0, 0), client.WithBreaker(gobreaker.Settings{
		Name: "t", Timeout: time.Hour,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= 1 },
	}))
	_, err := c.Reserve(lateCtx{ctx}, &idemv1.ReserveRequest{Namespace: "ns", Key: "k"})
	t.Logf("late call: %v (%T)", err, err)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Reserve() past the caller's deadline = %v, want context.DeadlineExceeded", err)
	}
	if _, err := c.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k"}); err != nil {
		t.Errorf("Reserve() after a call that ran out its own deadline = %v, want it sent (breaker closed)", err)
	}
}
