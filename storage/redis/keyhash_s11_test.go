package redis

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/idemhq/idem/internal/keyhash"
)

// A damaged value under a Redis key that does not parse as a record key
// (written by hand, or by another layout) is reported by key hash: the
// error is logged, and the Redis key holds the caller's key.
func TestUnparsableDamagedKeyIsNamedByHash(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	s := openTest(ctx, t, "")
	k := s.tenantPrefix("t") + "secret-customer-key"
	if err := s.c.Set(ctx, k, "garbage", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	_, err := s.Stats(ctx, "t", "")
	if err == nil {
		t.Fatal("Stats() = nil error, want the damaged value reported")
	}
	if strings.Contains(err.Error(), "secret-customer-key") || !strings.Contains(err.Error(), keyhash.Of(k)) {
		t.Errorf("Stats() error = %v, want the key named by its hash only", err)
	}
}
