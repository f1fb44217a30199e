package memory_test

import (
	"context"
	"strings"
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
	for _, tc := range []struct {
		url     string
		wantErr string
	}{
		{"memory://", ""},
		{"MEMORY://", ""},
		{"memory:///", ""},
		{"memory://?shards=16&sweep_interval=10s", ""},
		{"memory://?sweep_interval=0", ""},
		{"memory://somehost", "takes no host or path"},
		{"memory://?shards=0", "shards"},
		{"memory://?shards=x", "shards"},
		{"memory://?sweep_interval=-1s", "sweep_interval"},
		{"memory://?bogus=1", "unknown parameter"},
		{"memory://u:pw@", "takes no host"},
		{"memory://?shards=4&shards=8", "shards"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s, err := storage.Open(ctx, tc.url, storage.OpenOptions{})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "idem: ") {
					t.Fatalf("Open(%q) error = %v, want an idem: error mentioning %q", tc.url, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open(%q) error = %v, want nil", tc.url, err)
			}
			defer s.Close()
			if _, ok := s.(*memory.Store); !ok {
				t.Fatalf("Open(%q) = %T, want *memory.Store", tc.url, s)
			}
			if err := s.Ping(ctx); err != nil {
				t.Fatalf("Ping() error = %v, want nil", err)
			}
		})
	}
}
