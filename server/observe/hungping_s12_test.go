package observe

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/idemhq/idem/storage/memory"
)

// deafStore's Ping ignores its context, as a store stuck in disk I/O does,
// and returns only when released.
type deafStore struct {
	*memory.Store
	release chan struct{}
}

func (s deafStore) Ping(context.Context) error { <-s.release; return nil }

// A Ping that outlives its context is recorded as a failed ping when the
// context ends, not only when (if ever) it returns: while it hangs the
// health checker starts no other, so IdemStoreDown would see no pings at
// all and never fire.
func TestHungPingCountsAsFailedWhenItsContextEnds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	m := NewMetrics()
	mem := memory.New()
	release := make(chan struct{})
	st := InstrumentStore("pebble", deafStore{Store: mem, release: release}, m)
	defer st.Close()
	// The health checker's timeout, idemd's own, already past.
	pctx, pcancel := context.WithDeadline(ctx, time.Unix(1, 0))
	defer pcancel()
	returned := make(chan error, 1)
	go func() { returned <- st.Ping(pctx) }()
	errs := m.storeErrors.WithLabelValues("pebble", "ping")
	for testutil.ToFloat64(errs) != 1 {
		select {
		case <-ctx.Done():
			t.Fatalf("idem_store_errors_total{op=ping} = %v while the Ping hangs past its context, want 1", testutil.ToFloat64(errs))
		default:
		}
		time.Sleep(time.Millisecond) // the AfterFunc runs on its own goroutine
	}
	close(release)
	if err := <-returned; err != nil {
		t.Fatalf("Ping() = %v, want the store's nil", err)
	}
	if got := testutil.ToFloat64(errs); got != 1 {
		t.Errorf("idem_store_errors_total{op=ping} = %v after the hung Ping returned, want 1 (counted once)", got)
	}
	var d dto.Metric
	if err := m.storeOp.WithLabelValues("pebble", "ping").(prometheus.Metric).Write(&d); err != nil {
		t.Fatal(err)
	}
	if got := d.GetHistogram().GetSampleCount(); got != 1 {
		t.Errorf("idem_store_op_duration_seconds_count{op=ping} = %d, want 1", got)
	}
}
