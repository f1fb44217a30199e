package limit

import (
	"context"
	"testing"

	"github.com/jonboulle/clockwork"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// TestTenantlessStreamsSpendNoTenantsLimits: a stream that names no
// tenant and carries no identity (server reflection, which a gRPC UI keeps
// open) acts for no tenant. Counting it against "default" let a few such
// streams refuse, and spend the rate of, every call of the default tenant.
func TestTenantlessStreamsSpendNoTenantsLimits(t *testing.T) {
	l := New(Config{MaxInflight: 10, TenantMaxInflight: 1, TenantRate: 1}, WithClock(clockwork.NewFakeClock()))
	ctx := context.Background()
	stream, err := l.Admit(ctx, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", nil)
	if err != nil {
		t.Fatalf("reflection stream refused: %v", err)
	}
	defer stream()
	call, err := l.Admit(ctx, "/idem.v1.IdempotencyService/Reserve", &idemv1.ReserveRequest{})
	if err != nil {
		t.Fatalf("default tenant's Reserve while a reflection stream is open: %v, want admitted", err)
	}
	call()
	if got := l.inflight.Load(); got != 1 {
		t.Errorf("replica in flight = %d, want 1 (the stream still holds its slot)", got)
	}
}
