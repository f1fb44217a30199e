package observe

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/memory"
)

// TestServiceMetrics drives the real service through the metrics
// interceptor and checks every counter it derives.
// serveMetered serves st with m's interceptor until the test ends.
func serveMetered(t *testing.T, st storage.Store, m *Metrics) idemv1.IdempotencyServiceClient {
	t.Helper()
	svc, err := server.New(st, server.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	lis := listen(t)
	gs := server.NewGRPCServer(svc, grpc.ChainUnaryInterceptor(m.UnaryServerInterceptor()))
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return idemv1.NewIdempotencyServiceClient(dialBuf(t, lis))
}

func TestServiceMetrics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m := NewMetrics()
	mem := memory.New()
	defer mem.Close()
	c := serveMetered(t, InstrumentStore("memory", mem, m), m)

	const ns = "orders"
	fp := []byte("fp")
	reserve := func(ctx context.Context, key string, wait time.Duration) (*idemv1.ReserveResponse, error) {
		req := &idemv1.ReserveRequest{Namespace: ns, Key: key, Fingerprint: fp, LeaseTtl: durationpb.New(time.Minute)}
		if wait > 0 {
			req.Wait = durationpb.New(wait)
		}
		return c.Reserve(ctx, req)
	}
	mustOutcome := func(resp *idemv1.ReserveResponse, err error, want idemv1.ReserveOutcome) {
		t.Helper()
		if err != nil || resp.GetOutcome() != want {
			t.Fatalf("Reserve() = %v, %v, want %v", resp.GetOutcome(), err, want)
		}
	}
	storeReserves := func() uint64 { return histCount(t, m, "memory", "reserve") }

	r, err := reserve(ctx, "a", 0)
	mustOutcome(r, err, idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED)
	r, err = reserve(ctx, "a", 0)
	mustOutcome(r, err, idemv1.ReserveOutcome_RESERVE_OUTCOME_IN_PROGRESS)

	// A waiter that sees the key complete.
	type answer struct {
		r   *idemv1.ReserveResponse
		err error
	}
	done := make(chan answer, 1)
	before := storeReserves()
	go func() { r, err := reserve(ctx, "a", 10*time.Second); done <- answer{r, err} }()
	for storeReserves() == before {
		select {
		case <-ctx.Done():
			t.Fatal("waiter never reached the store")
		case <-time.After(time.Millisecond):
		}
	}
	if _, err := c.Complete(ctx, &idemv1.CompleteRequest{Namespace: ns, Key: "a", Token: 1, Result: &idemv1.Result{Body: []byte("ok")}}); err != nil {
		t.Fatal(err)
	}
	a := <-done
	mustOutcome(a.r, a.err, idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED)

	// A stale holder.
	_, err = c.Complete(ctx, &idemv1.CompleteRequest{Namespace: ns, Key: "a", Token: 7})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("Complete(stale token) error = %v, want FailedPrecondition", err)
	}
	// A takeover after a release.
	r, err = reserve(ctx, "b", 0)
	mustOutcome(r, err, idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED)
	if _, err := c.Release(ctx, &idemv1.ReleaseRequest{Namespace: ns, Key: "b", Token: 1}); err != nil {
		t.Fatal(err)
	}
	r, err = reserve(ctx, "b", 0)
	mustOutcome(r, err, idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED)

	// Batches: a replay, a new key, and a stale completion.
	br, err := c.BatchReserve(ctx, &idemv1.BatchReserveRequest{Namespace: ns, Items: []*idemv1.BatchReserveRequest_Item{{Key: "a", Fingerprint: fp}, {Key: "c", Fingerprint: fp}}})
	if err != nil || len(br.GetResults()) != 2 {
		t.Fatalf("BatchReserve() = %v, %v", br, err)
	}
	if _, err := c.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: ns, Items: []*idemv1.BatchCompleteRequest_Item{{Key: "c", Token: 9}}}); err != nil {
		t.Fatal(err)
	}

	// A waiter whose caller gives up.
	wctx, wcancel := context.WithCancel(ctx)
	before = storeReserves()
	go func() { _, err := reserve(wctx, "c", 10*time.Second); done <- answer{nil, err} }()
	for storeReserves() == before {
		select {
		case <-ctx.Done():
			t.Fatal("waiter never reached the store")
		case <-time.After(time.Millisecond):
		}
	}
	wcancel()
	if a := <-done; status.Code(a.err) != codes.Canceled {
		t.Fatalf("canceled waiter error = %v, want Canceled", a.err)
	}
	// The server notices the cancellation after the client does.
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(m.waits.WithLabelValues(ns, WaitCanceled)) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}

	tests := []struct {
		name string
		got  float64
		want float64
	}{
		{"reserved", testutil.ToFloat64(m.reserveOutcomes.WithLabelValues(ns, "reserved")), 3 + 1},
		{"in_progress", testutil.ToFloat64(m.reserveOutcomes.WithLabelValues(ns, "in_progress")), 1},
		{"completed", testutil.ToFloat64(m.reserveOutcomes.WithLabelValues(ns, "completed")), 1 + 1},
		{"takeovers", testutil.ToFloat64(m.takeovers.WithLabelValues(ns)), 1},
		{"lease lost Complete", testutil.ToFloat64(m.leaseLost.WithLabelValues(ns, "Complete")), 1},
		{"lease lost BatchComplete", testutil.ToFloat64(m.leaseLost.WithLabelValues(ns, "BatchComplete")), 1},
		{"waits completed", testutil.ToFloat64(m.waits.WithLabelValues(ns, WaitCompleted)), 1},
		{"waits canceled", testutil.ToFloat64(m.waits.WithLabelValues(ns, WaitCanceled)), 1},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	if n := testutil.CollectAndCount(m.waitDuration); n != 1 {
		t.Errorf("wait duration series = %d, want 1", n)
	}
}
