package memory_test

import (
	"context"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/memory"
	"github.com/idemhq/idem/storage/storagetest"
)

type harness struct{}

func (harness) MakeStore(ctx context.Context, t *testing.T) (storage.Store, storagetest.Clock) {
	clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC))
	return memory.New(memory.WithClock(clock)), clock
}

func (harness) MakeBenchStore(ctx context.Context, b *testing.B) storage.Store {
	s := memory.New()
	b.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storagetest.RunConformanceTests(t, harness{})
}

// TestConformanceOneShard runs the suite with every key contending for one lock.
func TestConformanceOneShard(t *testing.T) {
	storagetest.RunConformanceTests(t, oneShard{})
}

type oneShard struct{}

func (oneShard) MakeStore(ctx context.Context, t *testing.T) (storage.Store, storagetest.Clock) {
	clock := clockwork.NewFakeClock()
	return memory.New(memory.WithClock(clock), memory.WithShards(1)), clock
}

func BenchmarkStore(b *testing.B) {
	storagetest.RunBenchmarks(b, harness{})
}

func TestOpenURL(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := storage.Open(ctx, "memory://", storage.OpenOptions{})
	if err != nil {
		t.Fatalf("Open(memory://) error = %v, want nil", err)
	}
	defer s.Close()
	if _, ok := s.(*memory.Store); !ok {
		t.Fatalf("Open(memory://) = %T, want *memory.Store", s)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping() error = %v, want nil", err)
	}
}
