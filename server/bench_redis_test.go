package server

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/idemhq/idem/internal/testenv"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// BenchmarkEndToEndRedis is BenchmarkEndToEnd's Reserve against the real
// Redis (IDEM_TEST_REDIS_URL), 50 concurrent callers, next to the same
// idemd's health check in the same run. "redis" serves Redis as --store;
// "policy" serves memory:// as --store and routes the namespace to Redis
// through a --policy file, so it also pays for the routing.
//
//	IDEM_TEST_REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench EndToEndRedis -benchtime 20000x ./server/
func BenchmarkEndToEndRedis(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("reads the server's CPU time from /proc")
	}
	raw := testenv.RedisURL(b)
	u, err := url.Parse(raw)
	if err != nil {
		b.Fatal(err)
	}
	q := u.Query()
	q.Set("key_prefix", fmt.Sprintf("idem-bench-%d", time.Now().UnixNano()))
	u.RawQuery = q.Encode()
	redisURL := u.String()

	bin := filepath.Join(b.TempDir(), "idemd")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/idemd").CombinedOutput(); err != nil {
		b.Fatalf("building idemd: %v\n%s", err, out)
	}
	policy := filepath.Join(b.TempDir(), "policy.yaml")
	if err := os.WriteFile(policy, []byte("namespaces:\n  bench.*:\n    store: \""+redisURL+"\"\n    default_retention: 10m\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	results := map[string]benchResult{}
	for _, mode := range []string{"redis", "policy"} {
		b.Run(mode, func(b *testing.B) {
			store := redisURL
			if mode == "policy" {
				store = "memory://"
				b.Setenv("IDEM_POLICY", policy) // the subprocess inherits it
			}
			d := startBenchIdemd(b, bin, store)
			defer d.stop(b)
			conn, err := grpc.NewClient(d.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			hc := healthpb.NewHealthClient(conn)
			ic := idemv1.NewIdempotencyServiceClient(conn)
			var seq atomic.Uint64
			run := strconv.FormatInt(time.Now().UnixNano(), 36)
			health := func(ctx context.Context) error {
				_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
				return err
			}
			ops := map[string]func(context.Context) error{
				"Health":      health,
				"HealthAgain": health,
				"Reserve": func(ctx context.Context) error {
					key := run + "-" + strconv.FormatUint(seq.Add(1), 36)
					_, err := ic.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "bench.send", Key: key, Fingerprint: []byte("fingerprint-0123456789abcdef")})
					return err
				},
			}
			for _, name := range []string{"Health", "Reserve", "HealthAgain"} {
				b.Run(name, func(b *testing.B) {
					results[mode+"/"+name] = runParallelOps(b, d.pid, ops[name])
				})
			}
		})
	}
	for _, mode := range []string{"redis", "policy"} {
		h1, h2, r := results[mode+"/Health"], results[mode+"/HealthAgain"], results[mode+"/Reserve"]
		if h1.opsPerSec == 0 || h2.opsPerSec == 0 {
			continue
		}
		h := (h1.opsPerSec + h2.opsPerSec) / 2
		b.Logf("%s: Health (mean of both runs) %.0f ops/s; Reserve %.0f ops/s = %.2fx health (target ≥ 0.7x); %.1f µs server cpu/op vs %.1f for health",
			mode, h, r.opsPerSec, r.opsPerSec/h, r.cpuPerOp, (h1.cpuPerOp+h2.cpuPerOp)/2)
	}
}
