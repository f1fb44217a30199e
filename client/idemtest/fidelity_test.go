package idemtest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/idemhq/idem/client"
	"github.com/idemhq/idem/client/idemtest"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// TestDialAnswersLikeIdemd: Dial must serve with idemd's gRPC server (its
// codec leaves UTF-8 to request validation), so a bad key is the same
// INVALID_ARGUMENT over Dial as over Local and in production, not INTERNAL.
func TestDialAnswersLikeIdemd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	idem := idemtest.New(t)
	for name, svc := range map[string]client.Service{"local": idem.Local(), "dial": idem.Dial(t)} {
		_, err := svc.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "order-\xff"})
		if !errors.Is(err, client.ErrInvalidArgument) {
			t.Errorf("%s: Reserve(non-UTF-8 key) error = %v, want ErrInvalidArgument", name, err)
		}
	}
}
