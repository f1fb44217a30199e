package loadgen

import (
	"context"
	"encoding/binary"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// flakyServer refuses every other Reserve with RESOURCE_EXHAUSTED and
// answers every other health check NOT_SERVING; each served Reserve burns
// about a millisecond of CPU. Its batches answer items by index: an error,
// RESERVED, COMPLETED; its BatchComplete always fails.
type flakyServer struct {
	idemv1.UnimplementedIdempotencyServiceServer
	healthpb.UnimplementedHealthServer
	reserves, checks atomic.Int64
}

func (s *flakyServer) Reserve(ctx context.Context, req *idemv1.ReserveRequest) (*idemv1.ReserveResponse, error) {
	if s.reserves.Add(1)%2 == 0 {
		return nil, status.Error(codes.ResourceExhausted, "busy")
	}
	for t := time.Now(); time.Since(t) < time.Millisecond; {
	}
	return &idemv1.ReserveResponse{Outcome: idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED, Record: &idemv1.Record{Token: 1}}, nil
}

func (s *flakyServer) BatchReserve(ctx context.Context, req *idemv1.BatchReserveRequest) (*idemv1.BatchReserveResponse, error) {
	resp := &idemv1.BatchReserveResponse{}
	for i := range req.GetItems() {
		var r idemv1.BatchReserveResponse_Result
		switch i % 3 {
		case 0:
			r.Error = &idemv1.ItemError{Code: int32(codes.InvalidArgument)}
		case 1:
			r.Outcome, r.Record = idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED, &idemv1.Record{Token: 1}
		case 2:
			r.Outcome = idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED
		}
		resp.Results = append(resp.Results, &r)
	}
	return resp, nil
}

func (s *flakyServer) BatchComplete(context.Context, *idemv1.BatchCompleteRequest) (*idemv1.BatchCompleteResponse, error) {
	return nil, status.Error(codes.Unavailable, "down")
}

func (s *flakyServer) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	st := healthpb.HealthCheckResponse_SERVING
	if s.checks.Add(1)%2 == 0 {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	return &healthpb.HealthCheckResponse{Status: st}, nil
}

func startFlaky(t *testing.T) []grpc.ClientConnInterface {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	fs := &flakyServer{}
	idemv1.RegisterIdempotencyServiceServer(gs, fs)
	healthpb.RegisterHealthServer(gs, fs)
	var wg sync.WaitGroup
	wg.Go(func() { _ = gs.Serve(lis) })
	c, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		gs.Stop()
		wg.Wait()
	})
	return []grpc.ClientConnInterface{c}
}

// Refused calls are not throughput: a server that refuses half its calls
// fast must not look as fast as one serving them all.
func TestRatesCountOnlyServedOps(t *testing.T) {
	ctx := testContext(t)
	cfg := baseConfig(startFlaky(t))
	cfg.Op, cfg.Concurrency, cfg.Count, cfg.Floor = OpReserve, 1, 200, true
	cfg.ServerPID = os.Getpid()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*Phase{rep.Floor, rep.Idem} {
		if p.Ops != 200 || p.Errors != 100 {
			t.Fatalf("%s: ops, errors = %d, %d; want 200, 100", p.Name, p.Ops, p.Errors)
		}
		if got := p.OpsPerSec * p.DurationSec; math.Abs(got-100) > 1e-6 {
			t.Errorf("%s: ops/s × duration = %v, want the 100 served ops", p.Name, got)
		}
		if got := p.CallsPerSec * p.DurationSec; math.Abs(got-100) > 1e-6 {
			t.Errorf("%s: calls/s × duration = %v, want the 100 served calls", p.Name, got)
		}
	}
	// 100 served Reserves burn at least 100 ms: CPU per op is per served op.
	if c := rep.Idem.ServerCPU; c == nil || c.CPUUS == 0 || math.Abs(c.CPUUSPerOp*100-float64(c.CPUUS)) > 1e-6 {
		t.Errorf("idem server cpu = %+v, want cpu_us / 100 per op", c)
	}
}

// A failed BatchComplete fails the items it would have completed, not the
// whole batch again.
func TestBatchCompleteFailureCountsItsItems(t *testing.T) {
	ctx := testContext(t)
	cfg := baseConfig(startFlaky(t))
	cfg.Batch, cfg.Count, cfg.Concurrency = 9, 2, 1
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := rep.Idem
	// Per batch: 3 item errors, 3 RESERVED whose Complete failed, 3 COMPLETED.
	if p.Ops != 18 || p.Errors != 12 || p.ErrorsByCode["InvalidArgument"] != 6 || p.ErrorsByCode["Unavailable"] != 6 {
		t.Fatalf("ops %d, errors %d %v; want 18 ops, 12 errors (6 InvalidArgument, 6 Unavailable)", p.Ops, p.Errors, p.ErrorsByCode)
	}
	if got := p.OpsPerSec * p.DurationSec; math.Abs(got-6) > 1e-6 {
		t.Errorf("ops/s × duration = %v, want the 6 COMPLETED answers", got)
	}
}

// Recording an idem call's outcome costs the caller no more than recording
// a health check: the callers share the server's CPU, so bookkeeping only
// the idem phase pays would lower its rate.
func TestRecordingOutcomesDoesNotAllocate(t *testing.T) {
	rec := newRecorder()
	var t1 tally
	t1.ops = 1
	health := testing.AllocsPerRun(1000, func() {
		t1.ops = 1
		rec.record(time.Millisecond, &t1)
	})
	var t2 tally
	idem := testing.AllocsPerRun(1000, func() {
		t2 = tally{ops: 1}
		t2.addOutcome(idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED)
		rec.record(time.Millisecond, &t2)
	})
	if idem != health {
		t.Errorf("recording a Reserve allocates %v times, a health check %v", idem, health)
	}
	_, _, outcomes := totals([]*recorder{rec})
	if len(outcomes) != 1 || outcomes["RESERVED"] == 0 {
		t.Errorf("outcomes = %v, want only RESERVED", outcomes)
	}
	var c outcomeCounts
	c.add(idemv1.ReserveOutcome(9), 2)
	c.add(idemv1.ReserveOutcome_RESERVE_OUTCOME_MISMATCH, 1)
	if got := c.byName(); len(got) != 2 || got["MISMATCH"] != 1 || got["9"] != 2 {
		t.Errorf("outcomes by name = %v, want MISMATCH=1 and 9=2", got)
	}
}

// utime and stime are in USER_HZ ticks, which auxv's AT_CLKTCK gives.
func TestServerCPUUsesUserHZ(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"42", "self"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "42", "stat"), []byte("42 (idemd) S 1 42 42 0 -1 4194560 1000 0 0 0 400 100 0 0 20 0 8 0 100 0 0"), 0o644); err != nil {
		t.Fatal(err)
	}
	word := int(unsafe.Sizeof(uintptr(0)))
	var auxv []byte
	for _, v := range []uint64{6, 4096, atClkTck, 250, 0, 0} {
		b := make([]byte, word)
		if word == 8 {
			binary.NativeEndian.PutUint64(b, v)
		} else {
			binary.NativeEndian.PutUint32(b, uint32(v))
		}
		auxv = append(auxv, b...)
	}
	if err := os.WriteFile(filepath.Join(root, "self", "auxv"), auxv, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := ProcessCPU(root, 42); err != nil || got != 2*time.Second {
		t.Fatalf("ProcessCPU = %v, %v; want 500 ticks at 250 Hz = 2s", got, err)
	}
	// The real auxv: USER_HZ is 100 on linux/amd64 and arm64, and a parse
	// that failed would also say 100, so the file must be readable too.
	if runtime.GOOS == "linux" && (runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64") {
		if _, err := os.ReadFile("/proc/self/auxv"); err != nil {
			t.Fatal(err)
		}
		if hz := userHZ("/proc"); hz != 100 {
			t.Errorf("userHZ(/proc) = %d, want 100", hz)
		}
	}
}
