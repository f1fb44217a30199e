package observe

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/memory"
)

// failingAfter fails every Reserve after the first n.
type failingAfter struct {
	storage.Store
	n     int64
	calls atomic.Int64
}

func (s *failingAfter) Reserve(ctx context.Context, p storage.ReserveParams) (storage.Outcome, *storage.Record, error) {
	if s.calls.Add(1) > s.n {
		return 0, nil, storage.ErrUnavailable
	}
	return s.Store.Reserve(ctx, p)
}

// A wait the store ends (UNAVAILABLE after waiting) is still a wait: it
// counts in idem_waits_total and idem_wait_duration_seconds.
func TestWaitEndedByStoreFailureIsCounted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	m := NewMetrics()
	mem := memory.New()
	defer mem.Close()
	// The holder's Reserve and the waiter's first succeed; the waiter's poll fails.
	st := &failingAfter{Store: mem, n: 2}
	c := serveMetered(t, InstrumentStore("memory", st, m), m)

	const ns = "orders"
	req := &idemv1.ReserveRequest{Namespace: ns, Key: "a", Fingerprint: []byte("fp"), LeaseTtl: durationpb.New(time.Minute)}
	if _, err := c.Reserve(ctx, req); err != nil {
		t.Fatal(err)
	}
	req.Wait = durationpb.New(20 * time.Second)
	if _, err := c.Reserve(ctx, req); status.Code(err) != codes.Unavailable {
		t.Fatalf("waiting Reserve() error = %v, want Unavailable", err)
	}
	if got := testutil.ToFloat64(m.waits.WithLabelValues(ns, WaitError)); got != 1 {
		t.Errorf("idem_waits_total{result=%q} = %v, want 1", WaitError, got)
	}
	if n := testutil.CollectAndCount(m.waitDuration); n != 1 {
		t.Errorf("wait duration series = %d, want 1", n)
	}
	if got := testutil.ToFloat64(m.rejected.WithLabelValues(RejectWaiters)); got != 0 {
		t.Errorf("idem_rejected_total{reason=waiters} = %v, want 0", got)
	}
}
