package memory

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

// blockedIn reports, once a goroutine waits for a shard lock inside the
// store method fn, true; false if ctx ends first.
func blockedIn(ctx context.Context, fn string) bool {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		for _, g := range strings.Split(string(buf[:n]), "\n\n") {
			if strings.Contains(g, "sync.(*RWMutex).") && strings.Contains(g, "memory.(*Store)."+fn+"(") {
				return true
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Millisecond):
		}
	}
}

// TestCallRacingCloseAnswersErrClosed: Close empties each shard under its
// lock. A read that passed the closed check before and took the shard's
// lock after found the shard empty and answered ErrNotFound (or an empty
// page) for a record that was stored. Each such call now answers ErrClosed.
func TestCallRacingCloseAnswersErrClosed(t *testing.T) {
	for _, tc := range []struct {
		name string
		call func(ctx context.Context, s *Store) error
	}{
		{"Lookup", func(ctx context.Context, s *Store) error { _, err := s.Lookup(ctx, id("k")); return err }},
		{"Delete", func(ctx context.Context, s *Store) error { _, err := s.Delete(ctx, id("k")); return err }},
		{"List", func(ctx context.Context, s *Store) error {
			_, _, err := s.List(ctx, storage.ListParams{Tenant: "t", Namespace: "ns", Limit: 10})
			return err
		}},
		{"Stats", func(ctx context.Context, s *Store) error { _, err := s.Stats(ctx, "t", ""); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s := New(WithShards(1), WithSweepInterval(0))
			defer s.Close()
			mustReserve(t, ctx, s, "k", time.Hour, time.Hour)
			sh := &s.shards[0]
			sh.mu.Lock()
			done := make(chan error, 1)
			go func() { done <- tc.call(ctx, s) }()
			if !blockedIn(ctx, tc.name) {
				sh.mu.Unlock()
				t.Fatalf("%s never waited for the shard lock", tc.name)
			}
			// What Close does to the shard while the call waits.
			s.closed.Store(true)
			sh.t.reset()
			sh.mu.Unlock()
			if err := <-done; !errors.Is(err, storage.ErrClosed) {
				t.Errorf("%s racing Close error = %v, want ErrClosed", tc.name, err)
			}
		})
	}
}
