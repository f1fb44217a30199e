package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// roundsServer refuses the first refuse Reserves (the first idem phase of a
// run with that --count) and serves the rest; health checks always serve.
// Its BatchReserve answers only the first item of a batch, and its
// BatchComplete answers nothing.
type roundsServer struct {
	idemv1.UnimplementedIdempotencyServiceServer
	healthpb.UnimplementedHealthServer
	refuse   int64
	reserves atomic.Int64
}

func (s *roundsServer) Reserve(context.Context, *idemv1.ReserveRequest) (*idemv1.ReserveResponse, error) {
	if s.reserves.Add(1) <= s.refuse {
		return nil, status.Error(codes.ResourceExhausted, "busy")
	}
	return &idemv1.ReserveResponse{Outcome: idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED, Record: &idemv1.Record{Token: 1}}, nil
}

func (s *roundsServer) Complete(context.Context, *idemv1.CompleteRequest) (*idemv1.CompleteResponse, error) {
	return &idemv1.CompleteResponse{}, nil
}

func (s *roundsServer) BatchReserve(_ context.Context, req *idemv1.BatchReserveRequest) (*idemv1.BatchReserveResponse, error) {
	return &idemv1.BatchReserveResponse{Results: []*idemv1.BatchReserveResponse_Result{
		{Outcome: idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED, Record: &idemv1.Record{Token: 1}},
	}}, nil
}

func (s *roundsServer) BatchComplete(context.Context, *idemv1.BatchCompleteRequest) (*idemv1.BatchCompleteResponse, error) {
	return &idemv1.BatchCompleteResponse{}, nil
}

func (s *roundsServer) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func startRoundsServer(t *testing.T, refuse int64) []grpc.ClientConnInterface {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	s := &roundsServer{refuse: refuse}
	idemv1.RegisterIdempotencyServiceServer(gs, s)
	healthpb.RegisterHealthServer(gs, s)
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

// A round whose calls failed is not the median round (its throughput ratio
// is the lowest), yet its ratios enter every median and its rate enters
// bench/lib.sh's median_idem_rate. Its errors must be in the report, where
// idemctl bench's exit status and the scripts can see them.
func TestRoundsReportEveryRoundsErrors(t *testing.T) {
	ctx := testContext(t)
	const count = 20
	cfg := baseConfig(startRoundsServer(t, count)) // round 1's idem phase fails whole
	cfg.Op, cfg.Concurrency, cfg.Count, cfg.Floor, cfg.Rounds = OpReserve, 1, count, true, 3
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Idem.Errors != 0 {
		t.Fatalf("median round's idem errors = %d; the test wants the failed round not to be the median", rep.Idem.Errors)
	}
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Rounds []map[string]any `json:"rounds"`
	}
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Rounds) != 3 {
		t.Fatalf("rounds = %d, want 3", len(doc.Rounds))
	}
	if got, _ := doc.Rounds[0]["idem_errors"].(float64); got != count {
		t.Errorf("round 1 in JSON = %v, want idem_errors %d", doc.Rounds[0], count)
	}
	buf.Reset()
	if err := rep.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "round 1:") || !strings.Contains(strings.SplitN(strings.SplitN(buf.String(), "round 1:", 2)[1], "\n", 2)[0], "errors") {
		t.Errorf("text report's round 1 line does not show its errors:\n%s", buf.String())
	}
	if !strings.Contains(buf.String(), "by throughput ratio") {
		t.Errorf("text report does not say which round its phase lines are (the median by throughput ratio):\n%s", buf.String())
	}
}

// A BatchReserve answer lacking items, or a BatchComplete answer lacking
// results, handled nothing for them: those keys are not served ops.
func TestBatchMissingResultsAreErrors(t *testing.T) {
	ctx := testContext(t)
	cfg := baseConfig(startRoundsServer(t, 0))
	cfg.Batch, cfg.Count, cfg.Concurrency = 5, 2, 1
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := rep.Idem
	// Per batch: 4 items unanswered, 1 RESERVED whose Complete is unanswered.
	if p.Ops != 10 || p.Errors != 10 {
		t.Fatalf("ops %d, errors %d %v; want 10 ops, all 10 failed", p.Ops, p.Errors, p.ErrorsByCode)
	}
	if p.OpsPerSec != 0 {
		t.Errorf("ops/s = %v, want 0: no key was handled", p.OpsPerSec)
	}
}
