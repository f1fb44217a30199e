package ctl

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// TestReserveExitCodes: reserve exited 0 for every outcome, so
// `idemctl reserve jobs nightly && run_job` ran the job again on
// COMPLETED. Only RESERVED (the caller now holds the key) exits 0; the
// answer is printed as before whatever the outcome.
func TestReserveExitCodes(t *testing.T) {
	ctx := testContext(t)
	addr := startServer(t)
	for _, tc := range []struct {
		name        string
		args        []string
		wantCode    int
		wantOutcome string
	}{
		{"new key", []string{"reserve", "jobs", "nightly", "--fingerprint", "f1"}, ExitOK, "RESERVED"},
		{"held by another run", []string{"reserve", "jobs", "nightly", "--fingerprint", "f1"}, ExitInProgress, "IN_PROGRESS"},
		{"another request", []string{"reserve", "jobs", "nightly", "--fingerprint", "f2"}, ExitMismatch, "MISMATCH"},
		{"complete it", []string{"complete", "jobs", "nightly", "1", "--body", "done"}, ExitOK, ""},
		{"done already", []string{"reserve", "jobs", "nightly", "--fingerprint", "f1"}, ExitCompleted, "COMPLETED"},
		{"done already, json", []string{"-o", "json", "reserve", "jobs", "nightly", "--fingerprint", "f1"}, ExitCompleted, `"RESERVE_OUTCOME_COMPLETED"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(ctx, t, nil, append([]string{"--addr", addr}, tc.args...)...)
			if r.code != tc.wantCode || r.stderr != "" {
				t.Fatalf("idemctl %s: exit %d, stderr %q; want exit %d and nothing on stderr", strings.Join(tc.args, " "), r.code, r.stderr, tc.wantCode)
			}
			if tc.wantOutcome == "" {
				return
			}
			if strings.HasPrefix(tc.wantOutcome, `"`) {
				if !strings.Contains(r.stdout, `"outcome": `+tc.wantOutcome) {
					t.Fatalf("reserve -o json = %s, want outcome %s", r.stdout, tc.wantOutcome)
				}
				return
			}
			if got := field(t, r.stdout, "outcome"); got != tc.wantOutcome {
				t.Fatalf("reserve outcome = %q, want %q", got, tc.wantOutcome)
			}
		})
	}

	// The codes are documented where a script's author looks.
	r := run(ctx, t, nil, "reserve", "-h")
	for _, want := range []string{"Exit codes: 0 RESERVED", "5 COMPLETED", "6 IN_PROGRESS", "7 MISMATCH"} {
		if r.code != ExitOK || !strings.Contains(r.stdout, want) {
			t.Errorf("idemctl reserve -h: exit %d, stdout lacks %q:\n%s", r.code, want, r.stdout)
		}
	}
	if r := run(ctx, t, nil, "-h"); !strings.Contains(r.stdout, "5 reserve answered COMPLETED, 6 IN_PROGRESS, 7 MISMATCH") {
		t.Errorf("idemctl -h does not list reserve's exit codes:\n%s", r.stdout)
	}
}

// flakyServer fails every second Reserve.
type flakyServer struct {
	idemv1.UnimplementedIdempotencyServiceServer
	n atomic.Int64
}

func (s *flakyServer) Reserve(context.Context, *idemv1.ReserveRequest) (*idemv1.ReserveResponse, error) {
	if s.n.Add(1)%2 == 0 {
		return nil, status.Error(codes.Internal, "boom")
	}
	return &idemv1.ReserveResponse{Outcome: idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED, Record: &idemv1.Record{Token: 1}}, nil
}

// reservedServer answers every Reserve RESERVED.
type reservedServer struct {
	idemv1.UnimplementedIdempotencyServiceServer
}

func (reservedServer) Reserve(context.Context, *idemv1.ReserveRequest) (*idemv1.ReserveResponse, error) {
	return &idemv1.ReserveResponse{Outcome: idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED, Record: &idemv1.Record{Token: 1}}, nil
}

// fixedHealth answers every health check with its status.
type fixedHealth struct {
	healthpb.UnimplementedHealthServer
	status healthpb.HealthCheckResponse_ServingStatus
}

func (h fixedHealth) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	return &healthpb.HealthCheckResponse{Status: h.status}, nil
}

// serveFake serves register's services on a loopback port until the test ends.
func serveFake(t *testing.T, register func(*grpc.Server)) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	register(gs)
	var wg sync.WaitGroup
	wg.Go(func() { _ = gs.Serve(lis) })
	t.Cleanup(func() { gs.Stop(); wg.Wait() })
	return lis.Addr().String()
}

// TestBenchExitsOneOnErrors: bench exited 0 unless every call failed, so a
// run where most calls failed passed for a measurement. The report is
// still printed in full first.
func TestBenchExitsOneOnErrors(t *testing.T) {
	ctx := testContext(t)
	for _, tc := range []struct {
		name       string
		idem       idemv1.IdempotencyServiceServer
		health     healthpb.HealthCheckResponse_ServingStatus
		args       []string
		wantStderr string
	}{
		{"half the Reserves fail", &flakyServer{}, healthpb.HealthCheckResponse_SERVING, nil,
			"idemctl: bench: 5 of 10 operations failed (errors: map[Internal:5])\n"},
		{"every floor check is NOT_SERVING", reservedServer{}, healthpb.HealthCheckResponse_NOT_SERVING, []string{"--floor"},
			"idemctl: bench: floor: 10 of 10 health checks failed (errors: map[NOT_SERVING:10])\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := serveFake(t, func(gs *grpc.Server) {
				idemv1.RegisterIdempotencyServiceServer(gs, tc.idem)
				healthpb.RegisterHealthServer(gs, fixedHealth{status: tc.health})
			})
			args := append([]string{"--addr", addr, "bench", "--op", "reserve", "--mix", "new=100", "--count", "10", "--concurrency", "1"}, tc.args...)
			r := run(ctx, t, nil, args...)
			if r.code != ExitFailed || r.stderr != tc.wantStderr {
				t.Fatalf("idemctl %s: exit %d, stderr %q; want exit %d, stderr %q", strings.Join(args, " "), r.code, r.stderr, ExitFailed, tc.wantStderr)
			}
			if !strings.Contains(r.stdout, "op reserve") {
				t.Fatalf("bench printed no report before failing:\n%s", r.stdout)
			}
		})
	}
}

// stallServer's Stats answers only when its caller gives up, as a store
// counting a few hundred million records; its Lookup fails at once with
// the server's own DEADLINE_EXCEEDED.
type stallServer struct {
	idemv1.UnimplementedAdminServiceServer
	idemv1.UnimplementedIdempotencyServiceServer
}

func (stallServer) Stats(ctx context.Context, _ *idemv1.StatsRequest) (*idemv1.StatsResponse, error) {
	<-ctx.Done()
	return nil, status.FromContextError(ctx.Err()).Err()
}

func (stallServer) Lookup(context.Context, *idemv1.LookupRequest) (*idemv1.LookupResponse, error) {
	return nil, status.Error(codes.DeadlineExceeded, "idem: the store did not answer in time")
}

// TestTimeoutIsNamed: a call that ran out of idemctl's own --timeout said
// only "DeadlineExceeded: context deadline exceeded", which reads as the
// server's failure; it names --timeout now. A DEADLINE_EXCEEDED that the
// server answered is shown as it is.
func TestTimeoutIsNamed(t *testing.T) {
	ctx := testContext(t)
	addr := serveFake(t, func(gs *grpc.Server) {
		idemv1.RegisterAdminServiceServer(gs, stallServer{})
		idemv1.RegisterIdempotencyServiceServer(gs, stallServer{})
	})
	start := time.Now()
	r := run(ctx, t, nil, "--addr", addr, "--timeout", "300ms", "stats")
	want := "idemctl: idem at " + addr + " did not answer within --timeout 300ms; raise --timeout\n"
	if r.code != ExitFailed || r.stderr != want {
		t.Fatalf("stats against a stalled server: exit %d, stderr %q; want exit %d, stderr %q", r.code, r.stderr, ExitFailed, want)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("stats took %v with --timeout 300ms", d)
	}
	r = run(ctx, t, nil, "--addr", addr, "lookup", "ns", "k")
	want = "idemctl: DeadlineExceeded: idem: the store did not answer in time\n"
	if r.code != ExitFailed || r.stderr != want {
		t.Fatalf("lookup answered DEADLINE_EXCEEDED by the server: exit %d, stderr %q; want exit %d, stderr %q", r.code, r.stderr, ExitFailed, want)
	}
}

// earlyStall ends a call a little before the deadline it was sent, as a
// server does whose clock or scheduling runs a moment ahead of idemctl's.
type earlyStall struct {
	idemv1.UnimplementedAdminServiceServer
}

func (earlyStall) Stats(ctx context.Context, _ *idemv1.StatsRequest) (*idemv1.StatsResponse, error) {
	dl, _ := ctx.Deadline()
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(dl) - 20*time.Millisecond):
	}
	return nil, status.Error(codes.DeadlineExceeded, "context deadline exceeded")
}

// The server's DEADLINE_EXCEEDED for the deadline idemctl sent can arrive
// before idemctl's own timer fires; it is still idemctl's --timeout.
func TestTimeoutAnsweredByServerIsNamed(t *testing.T) {
	ctx := testContext(t)
	addr := serveFake(t, func(gs *grpc.Server) { idemv1.RegisterAdminServiceServer(gs, earlyStall{}) })
	r := run(ctx, t, nil, "--addr", addr, "--timeout", "300ms", "stats")
	want := "idemctl: idem at " + addr + " did not answer within --timeout 300ms; raise --timeout\n"
	if r.code != ExitFailed || r.stderr != want {
		t.Fatalf("stats answered DEADLINE_EXCEEDED at the deadline: exit %d, stderr %q; want exit %d, stderr %q", r.code, r.stderr, ExitFailed, want)
	}
}
