package storagetest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

// BenchHarness makes stores for RunBenchmarks. Benchmarks run on the
// store's real clock, so a backend measures what production pays.
type BenchHarness interface {
	// MakeBenchStore returns a new, empty store; the harness closes it and
	// cleans up with b.Cleanup.
	MakeBenchStore(ctx context.Context, b *testing.B) storage.Store
}

// RunBenchmarks measures every Store operation. Run it from a backend's
// test with `go test -bench . -run '^$' ./storage/<backend>/`.
func RunBenchmarks(b *testing.B, h BenchHarness) {
	const (
		benchTTL       = time.Minute
		benchRetention = time.Hour
		batchSize      = 500
	)
	var seq int
	// setup makes a store and a fresh namespace; keys come from key(i).
	setup := func(b *testing.B) (context.Context, storage.Store, func(i int) storage.ID) {
		// Long enough for -benchtime=Nx runs that prepare N batches.
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		b.Cleanup(cancel)
		s := h.MakeBenchStore(ctx, b)
		seq++
		tenant := fmt.Sprintf("bench-%s-%d", runID, seq)
		return ctx, s, func(i int) storage.ID {
			return storage.ID{Tenant: tenant, Namespace: "/bench.v1.Bench/Do", Key: fmt.Sprintf("key-%012d", i)}
		}
	}
	fp := []byte("0123456789abcdef0123456789abcdef")
	res := &storage.Result{Body: make([]byte, 256), Metadata: map[string]string{"content-type": "application/grpc"}}
	reserve := func(b *testing.B, ctx context.Context, s storage.Store, id storage.ID, want storage.Outcome) {
		out, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id, Fingerprint: fp, LeaseTTL: benchTTL, Retention: benchRetention})
		if err != nil || out != want {
			b.Fatalf("Reserve(%q) = %v, %v; want %v", id.Key, out, err, want)
		}
	}
	complete := func(b *testing.B, ctx context.Context, s storage.Store, id storage.ID) {
		if _, err := s.Complete(ctx, storage.CompleteParams{ID: id, Token: 1, Result: res, Retention: benchRetention}); err != nil {
			b.Fatalf("Complete(%q) error = %v", id.Key, err)
		}
	}
	// prepare reserves (and optionally completes) n keys before the timer runs.
	prepare := func(b *testing.B, ctx context.Context, s storage.Store, key func(int) storage.ID, n int, done bool) {
		for i := range n {
			reserve(b, ctx, s, key(i), storage.OutcomeReserved)
			if done {
				complete(b, ctx, s, key(i))
			}
		}
		b.ResetTimer()
	}

	b.Run("Reserve/new", func(b *testing.B) {
		ctx, s, key := setup(b)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			reserve(b, ctx, s, key(i), storage.OutcomeReserved)
		}
	})
	b.Run("Reserve/new/parallel", func(b *testing.B) {
		ctx, s, key := setup(b)
		b.ReportAllocs()
		var next atomicCounter
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				reserve(b, ctx, s, key(next.add()), storage.OutcomeReserved)
			}
		})
	})
	b.Run("Reserve/completed", func(b *testing.B) {
		ctx, s, key := setup(b)
		const n = 1000
		prepare(b, ctx, s, key, n, true)
		b.ReportAllocs()
		for i := range b.N {
			reserve(b, ctx, s, key(i%n), storage.OutcomeCompleted)
		}
	})
	b.Run("Complete", func(b *testing.B) {
		ctx, s, key := setup(b)
		prepare(b, ctx, s, key, b.N, false)
		b.ReportAllocs()
		for i := range b.N {
			complete(b, ctx, s, key(i))
		}
	})
	b.Run("Release", func(b *testing.B) {
		ctx, s, key := setup(b)
		prepare(b, ctx, s, key, b.N, false)
		b.ReportAllocs()
		for i := range b.N {
			if _, err := s.Release(ctx, key(i), 1); err != nil {
				b.Fatalf("Release() error = %v", err)
			}
		}
	})
	b.Run("ExtendLease", func(b *testing.B) {
		ctx, s, key := setup(b)
		const n = 1000
		prepare(b, ctx, s, key, n, false)
		b.ReportAllocs()
		for i := range b.N {
			if _, err := s.ExtendLease(ctx, key(i%n), 1, benchTTL); err != nil {
				b.Fatalf("ExtendLease() error = %v", err)
			}
		}
	})
	b.Run("Checkpoint", func(b *testing.B) {
		ctx, s, key := setup(b)
		const n = 1000
		prepare(b, ctx, s, key, n, false)
		cp := storage.Checkpoint{Phase: "charged", Data: make([]byte, 64)}
		b.ReportAllocs()
		for i := range b.N {
			if _, err := s.Checkpoint(ctx, key(i%n), 1, cp); err != nil {
				b.Fatalf("Checkpoint() error = %v", err)
			}
		}
	})
	b.Run("Lookup", func(b *testing.B) {
		ctx, s, key := setup(b)
		const n = 1000
		prepare(b, ctx, s, key, n, true)
		b.ReportAllocs()
		for i := range b.N {
			if _, err := s.Lookup(ctx, key(i%n)); err != nil {
				b.Fatalf("Lookup() error = %v", err)
			}
		}
	})
	b.Run(fmt.Sprintf("BatchReserve/%d", batchSize), func(b *testing.B) {
		ctx, s, key := setup(b)
		items := make([]storage.ReserveParams, batchSize)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			for j := range items {
				items[j] = storage.ReserveParams{ID: key(i*batchSize + j), Fingerprint: fp, LeaseTTL: benchTTL, Retention: benchRetention}
			}
			rs, err := s.BatchReserve(ctx, items)
			if err != nil || len(rs) != batchSize || rs[0].Outcome != storage.OutcomeReserved {
				b.Fatalf("BatchReserve() = %d results, %v; want %d RESERVED", len(rs), err, batchSize)
			}
		}
		b.ReportMetric(float64(b.N*batchSize)/b.Elapsed().Seconds(), "items/s")
	})
	b.Run(fmt.Sprintf("BatchComplete/%d", batchSize), func(b *testing.B) {
		ctx, s, key := setup(b)
		items := make([]storage.CompleteParams, batchSize)
		for i := range b.N {
			rs := make([]storage.ReserveParams, batchSize)
			for j := range rs {
				rs[j] = storage.ReserveParams{ID: key(i*batchSize + j), Fingerprint: fp, LeaseTTL: benchTTL, Retention: benchRetention}
			}
			if _, err := s.BatchReserve(ctx, rs); err != nil {
				b.Fatalf("BatchReserve() error = %v", err)
			}
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			for j := range items {
				items[j] = storage.CompleteParams{ID: key(i*batchSize + j), Token: 1, Result: res, Retention: benchRetention}
			}
			cs, err := s.BatchComplete(ctx, items)
			if err != nil || len(cs) != batchSize || cs[0].Err != nil {
				b.Fatalf("BatchComplete() = %d results, %v; want %d completed", len(cs), err, batchSize)
			}
		}
		b.ReportMetric(float64(b.N*batchSize)/b.Elapsed().Seconds(), "items/s")
	})
}

// atomicCounter hands out distinct key numbers to parallel benchmark loops.
type atomicCounter struct{ n atomic.Int64 }

func (c *atomicCounter) add() int { return int(c.n.Add(1) - 1) }
