package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// benchCallers is the number of concurrent callers of the end-to-end benchmarks.
const benchCallers = 50

// BenchmarkEndToEnd measures Reserve (new keys) and Reserve+Complete
// through real gRPC over loopback TCP with 50 concurrent callers, next to
// grpc.health.v1.Health/Check on the same server in the same run, on the
// memory and the Pebble backend. idemd runs as a subprocess, so its CPU
// time (utime+stime from /proc/PID/stat, 10 ms ticks) is the server's
// alone; the test process is the client. Besides ns/op it reports ops/s
// and srv-cpu-µs/op, and logs the ratios the design targets name.
//
//	go test -run '^$' -bench EndToEnd -benchtime 20000x ./server/
func BenchmarkEndToEnd(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("reads the server's CPU time from /proc")
	}
	bin := filepath.Join(b.TempDir(), "idemd")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/idemd").CombinedOutput(); err != nil {
		b.Fatalf("building idemd: %v\n%s", err, out)
	}
	results := map[string]benchResult{}
	for _, backend := range []string{"memory", "pebble"} {
		b.Run(backend, func(b *testing.B) {
			store := "memory://"
			if backend == "pebble" {
				store = "pebble://" + filepath.Join(b.TempDir(), "data")
			}
			d := startBenchIdemd(b, bin, store)
			conn, err := grpc.NewClient(d.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			hc := healthpb.NewHealthClient(conn)
			ic := idemv1.NewIdempotencyServiceClient(conn)
			var seq atomic.Uint64
			run := fmt.Sprintf("%d", time.Now().UnixNano())
			ops := map[string]func(ctx context.Context) error{
				"Health": func(ctx context.Context) error {
					_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
					return err
				},
				"Reserve": func(ctx context.Context) error {
					key := run + "-" + strconv.FormatUint(seq.Add(1), 36)
					_, err := ic.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "bench", Key: key, Fingerprint: []byte("fingerprint-0123456789abcdef")})
					return err
				},
				"ReserveComplete": func(ctx context.Context) error {
					key := run + "-" + strconv.FormatUint(seq.Add(1), 36)
					r, err := ic.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "bench", Key: key, Fingerprint: []byte("fingerprint-0123456789abcdef")})
					if err != nil {
						return err
					}
					_, err = ic.Complete(ctx, &idemv1.CompleteRequest{Namespace: "bench", Key: key, Token: r.GetRecord().GetToken(), Result: &idemv1.Result{Body: []byte(`{"status":"ok"}`)}})
					return err
				},
			}
			ops["HealthAgain"] = ops["Health"]
			// Health runs before and after, so load that other processes put
			// on the machine during the run shifts the floor as much as the
			// operations it is compared with.
			for _, name := range []string{"Health", "Reserve", "ReserveComplete", "HealthAgain"} {
				b.Run(name, func(b *testing.B) {
					results[backend+"/"+name] = runParallelOps(b, d.pid, ops[name])
				})
			}
			h1, h2 := results[backend+"/Health"], results[backend+"/HealthAgain"]
			results[backend+"/Health"] = benchResult{opsPerSec: (h1.opsPerSec + h2.opsPerSec) / 2, cpuPerOp: (h1.cpuPerOp + h2.cpuPerOp) / 2}
			d.stop(b)
		})
	}
	for _, backend := range []string{"memory", "pebble"} {
		h, r, rc := results[backend+"/Health"], results[backend+"/Reserve"], results[backend+"/ReserveComplete"]
		if h.opsPerSec == 0 {
			continue
		}
		b.Logf("%s: Health (mean of both runs) %.0f ops/s %.1f µs cpu/op; Reserve %.0f ops/s (%.2fx health) %.1f µs cpu/op (%.2fx health); Reserve+Complete %.0f ops/s (%.2fx health) %.1f µs cpu/op",
			backend, h.opsPerSec, h.cpuPerOp, r.opsPerSec, r.opsPerSec/h.opsPerSec, r.cpuPerOp, r.cpuPerOp/h.cpuPerOp, rc.opsPerSec, rc.opsPerSec/h.opsPerSec, rc.cpuPerOp)
	}
	if m, p := results["memory/Reserve"], results["pebble/Reserve"]; m.opsPerSec > 0 && p.opsPerSec > 0 {
		b.Logf("pebble Reserve / memory Reserve = %.2fx", p.opsPerSec/m.opsPerSec)
	}
}

type benchResult struct {
	opsPerSec float64
	cpuPerOp  float64 // µs of server CPU per operation
}

func runParallelOps(b *testing.B, pid int, op func(context.Context) error) benchResult {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	par := (benchCallers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0)
	b.SetParallelism(par)
	cpu0 := procCPU(b, pid)
	start := time.Now()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := op(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	elapsed := time.Since(start)
	cpu := procCPU(b, pid) - cpu0
	res := benchResult{
		opsPerSec: float64(b.N) / elapsed.Seconds(),
		cpuPerOp:  float64(cpu.Microseconds()) / float64(b.N),
	}
	b.ReportMetric(res.opsPerSec, "ops/s")
	b.ReportMetric(res.cpuPerOp, "srv-cpu-µs/op")
	return res
}

// procCPU is a process's user+system CPU time.
func procCPU(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	s := string(raw)
	// Fields after the command name, which may hold spaces: state is [0],
	// utime [11], stime [12], in clock ticks (100 Hz on Linux).
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

type benchDaemon struct {
	cmd  *exec.Cmd
	pid  int
	addr string
	done chan error
}

func startBenchIdemd(b *testing.B, bin, store string) *benchDaemon {
	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--store", store)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	d := &benchDaemon{cmd: cmd, pid: cmd.Process.Pid, done: make(chan error, 1)}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "idemd serving" {
				addrc <- rec.Addr
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		d.done <- cmd.Wait()
	}()
	select {
	case d.addr = <-addrc:
		return d
	case err := <-d.done:
		b.Fatalf("idemd exited before serving: %v", err)
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		b.Fatal("idemd did not start")
	}
	return nil
}

func (d *benchDaemon) stop(b *testing.B) {
	_ = d.cmd.Process.Signal(os.Interrupt)
	select {
	case <-d.done:
	case <-time.After(time.Minute):
		_ = d.cmd.Process.Kill()
		<-d.done
		b.Error("idemd did not stop after SIGINT")
	}
}
