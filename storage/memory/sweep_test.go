package memory

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"

	"github.com/idemhq/idem/storage"
)

func TestMain(m *testing.M) {
	// Close must stop the sweep goroutine.
	goleak.VerifyTestMain(m)
}

func withSweepHook(f func(deleted int)) Option {
	return func(o *options) { o.onSweep = f }
}

// stored counts records physically held, expired or not.
func (s *Store) stored() int {
	n := 0
	for i := range s.shards {
		s.shards[i].mu.Lock()
		n += s.shards[i].t.n
		s.shards[i].mu.Unlock()
	}
	return n
}

func id(key string) storage.ID {
	return storage.ID{Tenant: "t", Namespace: "ns", Key: key}
}

func mustReserve(t *testing.T, ctx context.Context, s *Store, key string, lease, ret time.Duration) {
	t.Helper()
	out, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id(key), Fingerprint: []byte("fp"), LeaseTTL: lease, Retention: ret})
	if err != nil || out != storage.OutcomeReserved {
		t.Fatalf("Reserve(%q) = %v, %v; want RESERVED", key, out, err)
	}
}

func TestBackgroundSweep(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	clock := clockwork.NewFakeClock()
	swept := make(chan int, 1)
	s := New(WithClock(clock), WithSweepInterval(time.Minute), withSweepHook(func(n int) { swept <- n }))
	defer s.Close()

	mustReserve(t, ctx, s, "completed-30s", time.Second, time.Hour)
	if _, err := s.Complete(ctx, storage.CompleteParams{ID: id("completed-30s"), Token: 1, Retention: 30 * time.Second}); err != nil {
		t.Fatalf("Complete() error = %v", err)
	}
	mustReserve(t, ctx, s, "lease-3m", 3*time.Minute, time.Second)
	mustReserve(t, ctx, s, "hour", time.Second, time.Hour)

	// tick advances the fake clock by one interval once the sweeper waits
	// on its ticker, then returns what that sweep deleted.
	tick := func() int {
		t.Helper()
		if err := clock.BlockUntilContext(ctx, 1); err != nil {
			t.Fatalf("sweeper never waited on its ticker: %v", err)
		}
		clock.Advance(time.Minute)
		select {
		case n := <-swept:
			return n
		case <-ctx.Done():
			t.Fatalf("no sweep after a tick: %v", ctx.Err())
			return 0
		}
	}
	for i, want := range []struct{ deleted, stored int }{
		{1, 2}, // 1m: completed-30s is gone
		{0, 2}, // 2m: lease-3m still holds its lease
		{1, 1}, // 3m: lease-3m ended (and its retention long before)
		{0, 1},
	} {
		if got := tick(); got != want.deleted {
			t.Fatalf("sweep %d deleted %d records, want %d", i+1, got, want.deleted)
		}
		if got := s.stored(); got != want.stored {
			t.Fatalf("after sweep %d: %d records stored, want %d", i+1, got, want.stored)
		}
	}
	if _, err := s.Lookup(ctx, id("hour")); err != nil {
		t.Fatalf("Lookup(hour) error = %v, want nil: the sweep deleted a live record", err)
	}
}

func TestSweepDeletesOnlyExpired(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	clock := clockwork.NewFakeClock()
	s := New(WithClock(clock), WithSweepInterval(0), WithShards(4))
	defer s.Close()
	for i := range 100 {
		ret := time.Hour
		if i%3 == 0 {
			ret = time.Minute
		}
		mustReserve(t, ctx, s, fmt.Sprint("k", i), time.Second, ret)
	}
	if n := s.Sweep(); n != 0 {
		t.Fatalf("Sweep() before expiry deleted %d, want 0", n)
	}
	clock.Advance(time.Minute)
	if n := s.Sweep(); n != 34 {
		t.Fatalf("Sweep() deleted %d, want 34", n)
	}
	if got := s.stored(); got != 66 {
		t.Fatalf("stored = %d after sweep, want 66", got)
	}
	if n := s.Sweep(); n != 0 {
		t.Fatalf("second Sweep() deleted %d, want 0", n)
	}
}

// TestSweepConcurrentWithWriters runs sweeps while records are reserved
// and completed, for the race detector: short-lived records are swept,
// long-lived ones are never lost.
func TestSweepConcurrentWithWriters(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	clock := clockwork.NewFakeClock()
	s := New(WithClock(clock), WithSweepInterval(0), WithShards(8))
	defer s.Close()
	const (
		writers = 8
		perW    = 200
		long    = 100 * 365 * 24 * time.Hour // beyond any number of 1s sweeps here
	)
	stop := make(chan struct{})
	var sweeps sync.WaitGroup
	sweeps.Add(1)
	go func() {
		defer sweeps.Done()
		for {
			select {
			case <-stop:
				return
			default:
				s.Sweep()
				clock.Advance(time.Second)
			}
		}
	}()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perW {
				ret := long
				if i%2 == 1 {
					ret = time.Second
				}
				key := id(fmt.Sprintf("w%d-%d", w, i))
				out, rec, err := s.Reserve(ctx, storage.ReserveParams{ID: key, Fingerprint: []byte("fp"), LeaseTTL: time.Second, Retention: ret})
				if err != nil || out != storage.OutcomeReserved {
					t.Errorf("Reserve(%s) = %v, %v; want RESERVED", key.Key, out, err)
					return
				}
				// The record may already have expired under the racing clock.
				if _, err := s.Complete(ctx, storage.CompleteParams{ID: key, Token: rec.Token, Retention: ret}); err != nil && (ret == long || !errors.Is(err, storage.ErrNotFound)) {
					t.Errorf("Complete(%s) error = %v, want nil", key.Key, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	sweeps.Wait()
	clock.Advance(2 * time.Second)
	s.Sweep()
	if got, want := s.stored(), writers*perW/2; got != want {
		t.Fatalf("stored = %d after the last sweep, want %d long-lived records", got, want)
	}
	for w := range writers {
		for i := 0; i < perW; i += 2 {
			if rec, err := s.Lookup(ctx, id(fmt.Sprintf("w%d-%d", w, i))); err != nil || rec.State != storage.StateCompleted {
				t.Fatalf("Lookup(w%d-%d) = %+v, %v; want COMPLETED", w, i, rec, err)
			}
		}
	}
}

func TestCloseStopsSweepAndRefusesCalls(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	clock := clockwork.NewFakeClock()
	s := New(WithClock(clock), WithSweepInterval(time.Minute))
	if err := clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatalf("sweeper never started: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close() error = %v, want nil", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close() error = %v, want nil", err)
	}
	if _, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id("k"), LeaseTTL: time.Second, Retention: time.Second}); err != storage.ErrClosed {
		t.Fatalf("Reserve() after Close error = %v, want ErrClosed", err)
	}
}

func TestShardsRoundUp(t *testing.T) {
	for _, tc := range []struct{ in, want int }{{0, 1}, {1, 1}, {3, 4}, {256, 256}, {257, 512}} {
		s := New(WithShards(tc.in), WithSweepInterval(0))
		if got := len(s.shards); got != tc.want {
			t.Errorf("WithShards(%d): %d shards, want %d", tc.in, got, tc.want)
		}
		s.Close()
	}
}
