package redis

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

// evalshaStats reads the calls and µs Redis has spent in EVALSHA so far
// (wall time inside the command), and the CPU time its process has used.
func evalshaStats(ctx context.Context, b *testing.B, s *Store) (calls, usec int64, cpu float64) {
	b.Helper()
	info, err := s.c.Info(ctx, "commandstats", "cpu").Result()
	if err != nil {
		b.Fatalf("INFO commandstats: %v", err)
	}
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		for _, k := range []string{"used_cpu_user:", "used_cpu_sys:"} {
			if v, ok := strings.CutPrefix(line, k); ok {
				f, _ := strconv.ParseFloat(v, 64)
				cpu += f * 1e6
			}
		}
		rest, ok := strings.CutPrefix(line, "cmdstat_evalsha:")
		if !ok {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "calls":
				calls = n
			case "usec":
				usec = n
			}
		}
	}
	return calls, usec, cpu
}

// BenchmarkScriptCPU reports what one script call costs Redis, the figure
// that bounds how many calls one Redis serves per second: redis-µs/call is
// INFO commandstats' time inside EVALSHA (wall time, so a busy machine
// inflates it), redis-cpu-µs/call the CPU time of the Redis process
// (used_cpu_user + used_cpu_sys, network handling included). Other
// clients of the same Redis inflate both; run it against a Redis of its
// own.
func BenchmarkScriptCPU(b *testing.B) {
	fp := []byte("0123456789abcdef0123456789abcdef")
	res := &storage.Result{Body: make([]byte, 256), Metadata: map[string]string{"content-type": "application/grpc"}}
	id := func(i int) storage.ID {
		return storage.ID{Tenant: "bench", Namespace: "/bench.v1.Bench/Do", Key: "key-" + strconv.Itoa(i)}
	}
	reserve := func(ctx context.Context, b *testing.B, s *Store, i int, want storage.Outcome) {
		out, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id(i), Fingerprint: fp, LeaseTTL: time.Minute, Retention: time.Hour})
		if err != nil || out != want {
			b.Fatalf("Reserve(%d) = %v, %v; want %v", i, out, err, want)
		}
	}
	complete := func(ctx context.Context, b *testing.B, s *Store, i int) {
		if _, err := s.Complete(ctx, storage.CompleteParams{ID: id(i), Token: 1, Result: res, Retention: time.Hour}); err != nil {
			b.Fatalf("Complete(%d) error = %v", i, err)
		}
	}
	const prepared = 1000
	for _, tc := range []struct {
		name    string
		prepare func(ctx context.Context, b *testing.B, s *Store)
		op      func(ctx context.Context, b *testing.B, s *Store, i int)
	}{
		{"Reserve/new", nil, func(ctx context.Context, b *testing.B, s *Store, i int) {
			reserve(ctx, b, s, i, storage.OutcomeReserved)
		}},
		{"Reserve/completed", func(ctx context.Context, b *testing.B, s *Store) {
			for i := range prepared {
				reserve(ctx, b, s, i, storage.OutcomeReserved)
				complete(ctx, b, s, i)
			}
		}, func(ctx context.Context, b *testing.B, s *Store, i int) {
			reserve(ctx, b, s, i%prepared, storage.OutcomeCompleted)
		}},
		{"Complete", func(ctx context.Context, b *testing.B, s *Store) {
			for i := range b.N {
				reserve(ctx, b, s, i, storage.OutcomeReserved)
			}
		}, complete},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			s := openTest(ctx, b, "")
			if tc.prepare != nil {
				tc.prepare(ctx, b, s)
			}
			c0, u0, cpu0 := evalshaStats(ctx, b, s)
			b.ResetTimer()
			for i := range b.N {
				tc.op(ctx, b, s, i)
			}
			b.StopTimer()
			c1, u1, cpu1 := evalshaStats(ctx, b, s)
			if c1 > c0 {
				b.ReportMetric(float64(u1-u0)/float64(c1-c0), "redis-µs/call")
				b.ReportMetric((cpu1-cpu0)/float64(c1-c0), "redis-cpu-µs/call")
			}
		})
	}
}
