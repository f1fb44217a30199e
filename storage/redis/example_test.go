package redis_test

import (
	"context"
	"fmt"
	"time"

	"github.com/idemhq/idem/storage"
	_ "github.com/idemhq/idem/storage/redis" // registers redis:// and rediss://
)

// Open a Redis store that waits for one replica after every write and uses
// a pool of 50 connections. Compiled, not run: it needs a Redis.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := storage.Open(ctx, "redis://127.0.0.1:6379/0?pool_size=50&wait_replicas=1&wait_timeout=100ms", storage.OpenOptions{})
	if err != nil {
		fmt.Println(err) // errors.Is(err, storage.ErrUnavailable) when Redis does not answer
		return
	}
	defer s.Close()
	out, rec, err := s.Reserve(ctx, storage.ReserveParams{
		ID:          storage.ID{Tenant: "acme", Namespace: "/notify.v1.Notify/Send", Key: "order-42"},
		Fingerprint: []byte("sha256-of-request"),
		LeaseTTL:    30 * time.Second,
		Retention:   10 * time.Minute,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(out, rec.Token)
}
