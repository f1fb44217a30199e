package pebble

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/jonboulle/clockwork"
	dto "github.com/prometheus/client_model/go"

	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/storagetest"
)

// BenchmarkStore measures every Store operation through the shared suite:
//
//	go test -run '^$' -bench 'BenchmarkStore' ./storage/pebble/
func BenchmarkStore(b *testing.B) {
	storagetest.RunBenchmarks(b, harness{})
}

var benchFP = []byte("0123456789abcdef0123456789abcdef")

func benchParams(key string) storage.ReserveParams {
	return storage.ReserveParams{
		ID:          storage.ID{Tenant: "bench", Namespace: "/bench.v1.Bench/Do", Key: key},
		Fingerprint: benchFP, LeaseTTL: time.Minute, Retention: time.Hour,
	}
}

// fsyncs is how many WAL fsyncs the store has done.
func fsyncs(b *testing.B, s *Store) uint64 {
	var m dto.Metric
	if err := s.db.Metrics().LogWriter.FsyncLatency.Write(&m); err != nil {
		b.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// BenchmarkReserveParallel shows group commit: with 50 concurrent callers,
// each Reserve synced, throughput exceeds one Reserve per fsync because
// concurrent commits share fsyncs (reported as reserves/fsync).
//
//	go test -run '^$' -bench 'BenchmarkReserveParallel' ./storage/pebble/
func BenchmarkReserveParallel(b *testing.B) {
	for _, callers := range []int{1, 2, 50} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			s, err := Open(b.TempDir(), WithSweepInterval(0))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			var next atomic.Int64
			before := fsyncs(b, s)
			cpu0 := processCPU(b)
			b.ReportAllocs()
			b.ResetTimer()
			if callers == 1 {
				for range b.N {
					reserveNew(b, ctx, s, strconv.FormatInt(next.Add(1), 10))
				}
			} else {
				b.SetParallelism((callers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						reserveNew(b, ctx, s, strconv.FormatInt(next.Add(1), 10))
					}
				})
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reserves/s")
			b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N)/1e3, "cpu-µs/op")
			if n := fsyncs(b, s) - before; n > 0 {
				b.ReportMetric(float64(b.N)/float64(n), "reserves/fsync")
			}
		})
	}
}

// processCPU is the CPU time the test process has used, kernel threads
// working for it (its io_uring's) included.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reserveNew(b *testing.B, ctx context.Context, s *Store, key string) {
	out, _, err := s.Reserve(ctx, benchParams(key))
	if err != nil || out != storage.OutcomeReserved {
		b.Fatalf("Reserve(%s) = %v, %v; want RESERVED", key, out, err)
	}
}

// preloaded caches the big stores across the b.N rounds of one benchmark.
var preloaded sync.Map // size -> *Store

// preload fills a fresh store with n IN_PROGRESS records and their expiry
// entries by writing sorted tables and ingesting them, which takes seconds
// where n synced Reserves would take hours. The records are what Reserve
// writes, so lookups and the sweep see a store as Reserve would build it.
func preload(b *testing.B, n int) *Store {
	if s, ok := preloaded.Load(n); ok {
		return s.(*Store)
	}
	dir, err := os.MkdirTemp("", "idem-pebble-bench-")
	if err != nil {
		b.Fatal(err)
	}
	s, err := Open(dir, WithSweepInterval(0))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		s.Close()
		os.RemoveAll(dir)
		preloaded.Delete(n)
	})
	po := s.opts.pebbleOptions()
	po.EnsureDefaults()
	wo := po.MakeWriterOptions(6, s.db.TableFormat())
	now := s.now()
	const perTable = 500_000
	var paths []string
	for _, prefix := range []byte{prefixRecord, prefixExpiry} {
		for start := 0; start < n; start += perTable {
			path := filepath.Join(dir, fmt.Sprintf("ingest-%c-%d.sst", prefix, start))
			f, err := vfs.Default.Create(path, vfs.WriteCategoryUnspecified)
			if err != nil {
				b.Fatal(err)
			}
			w := sstable.NewWriter(objstorageprovider.NewFileWritable(f), wo)
			for i := start; i < min(start+perTable, n); i++ {
				// Expiry grows with i, so expiry entries sort as records do.
				p := benchParams(fmt.Sprintf("old-%010d", i))
				_, rec, _ := storage.ApplyReserve(nil, p, now)
				rec.ExpiresAt = rec.ExpiresAt.Add(time.Duration(i))
				key := recordKey(p.ID)
				if prefix == prefixRecord {
					err = w.Set(key, encodeRecord(rec))
				} else {
					err = w.Set(expiryKey(rec.ExpiresAt, key), nil)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
			paths = append(paths, path)
		}
	}
	if err := s.db.Ingest(context.Background(), paths); err != nil {
		b.Fatal(err)
	}
	preloaded.Store(n, s)
	return s
}

// BenchmarkReserveFlat measures synced Reserve latency of new keys, one
// caller at a time, in a store holding 10 thousand and 5 million records:
// the p50 should not grow with the store. -short skips the 5M store.
//
//	go test -run '^$' -bench 'BenchmarkReserveFlat' -benchtime 3000x ./storage/pebble/
func BenchmarkReserveFlat(b *testing.B) {
	for _, n := range []int{10_000, 5_000_000} {
		b.Run(fmt.Sprintf("stored=%d", n), func(b *testing.B) {
			if n > 10_000 && testing.Short() {
				b.Skip("-short: skipping the 5M-record store")
			}
			s := preload(b, n)
			ctx := context.Background()
			runtime.GC()
			debug.FreeOSMemory()
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				// Spread the new keys over the preloaded key range.
				key := fmt.Sprintf("old-%010d-new-%d", (i*7919)%n, i)
				t0 := time.Now()
				reserveNew(b, ctx, s, key)
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(rssMiB(), "rss-MiB")
		})
	}
}

// BenchmarkLookupFlat measures Lookup of stored keys in the same stores,
// the read half of Reserve on an existing key.
//
//	go test -run '^$' -bench 'BenchmarkLookupFlat' ./storage/pebble/
func BenchmarkLookupFlat(b *testing.B) {
	for _, n := range []int{10_000, 5_000_000} {
		b.Run(fmt.Sprintf("stored=%d", n), func(b *testing.B) {
			if n > 10_000 && testing.Short() {
				b.Skip("-short: skipping the 5M-record store")
			}
			s := preload(b, n)
			ctx := context.Background()
			b.ResetTimer()
			for i := range b.N {
				id := benchParams(fmt.Sprintf("old-%010d", (i*7919)%n)).ID
				if _, err := s.Lookup(ctx, id); err != nil {
					b.Fatalf("Lookup(%s) error = %v", id.Key, err)
				}
			}
		})
	}
}

// BenchmarkSweep measures deleting expired records, per record.
//
//	go test -run '^$' -bench 'BenchmarkSweep' ./storage/pebble/
func BenchmarkSweep(b *testing.B) {
	clock := clockwork.NewFakeClock()
	s, err := Open(b.TempDir(), WithSweepInterval(0), WithClock(clock))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	items := make([]storage.ReserveParams, 0, 1000)
	for i := 0; i < b.N; i += 1000 {
		items = items[:0]
		for j := i; j < min(i+1000, b.N); j++ {
			p := benchParams(strconv.Itoa(j))
			items = append(items, p)
		}
		if _, err := s.BatchReserve(ctx, items); err != nil {
			b.Fatal(err)
		}
	}
	clock.Advance(2 * time.Hour)
	b.ResetTimer()
	n, err := s.Sweep(ctx)
	if err != nil || n != b.N {
		b.Fatalf("Sweep() = %d, %v; want %d", n, err, b.N)
	}
}

func rssMiB() float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return float64(kb) / 1024
		}
	}
	return 0
}
