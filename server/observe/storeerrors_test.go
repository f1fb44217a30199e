package observe

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/memory"
)

// endingStore stands for a network store that does not answer: Reserve
// (and Ping, when pingHangs) return only once their context ends, with
// the context's error or, when leaky, as a SQL store reports a connection
// it dropped for it.
type endingStore struct {
	*memory.Store
	leaky, pingHangs bool
}

func (s endingStore) end(ctx context.Context) error {
	<-ctx.Done()
	if s.leaky {
		return fmt.Errorf("%w: read tcp db:5432: %v", storage.ErrUnavailable, ctx.Err())
	}
	return ctx.Err()
}

func (s endingStore) Reserve(ctx context.Context, _ storage.ReserveParams) (storage.Outcome, *storage.Record, error) {
	return 0, nil, s.end(ctx)
}

func (s endingStore) Ping(ctx context.Context) error {
	if s.pingHangs {
		return s.end(ctx)
	}
	return s.Store.Ping(ctx)
}

// idem_store_errors_total counts the store's failures, not the callers'
// deadlines: a caller with a 5 ms deadline must not page through
// IdemStoreDown. A call --store-timeout ended, and a ping the health
// checker's timeout ended, are the store's.
func TestStoreErrorsAreTheStoresOwn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	past := time.Unix(1, 0)
	tests := []struct {
		name         string
		leaky        bool
		storeTimeout time.Duration
		callerEnds   bool // the call's own deadline has passed
		wantCode     codes.Code
		wantErrors   float64
	}{
		{"caller's deadline", false, time.Hour, true, codes.DeadlineExceeded, 0},
		{"caller's deadline, store reports a dropped connection", true, time.Hour, true, codes.Unavailable, 0},
		{"caller's deadline, no store timeout", false, 0, true, codes.DeadlineExceeded, 0},
		{"store timeout", false, time.Nanosecond, false, codes.Unavailable, 1},
		{"store timeout, store reports a dropped connection", true, time.Nanosecond, false, codes.Unavailable, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMetrics()
			mem := memory.New()
			st := InstrumentStore("postgres", endingStore{Store: mem, leaky: tt.leaky}, m)
			defer st.Close()
			svc, err := server.New(st, server.WithStoreTimeout(tt.storeTimeout), server.WithLogger(slog.New(slog.DiscardHandler)))
			if err != nil {
				t.Fatal(err)
			}
			defer svc.Close()
			cctx := ctx
			if tt.callerEnds {
				var ccancel context.CancelFunc
				cctx, ccancel = context.WithDeadline(ctx, past)
				defer ccancel()
			}
			_, err = svc.Reserve(cctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k", Fingerprint: []byte("f"), LeaseTtl: durationpb.New(time.Minute)})
			if status.Code(err) != tt.wantCode {
				t.Fatalf("Reserve() error = %v, want %v", err, tt.wantCode)
			}
			if n := histCount(t, m, "postgres", "reserve"); n != 1 {
				t.Fatalf("store reserves = %d, want 1", n)
			}
			if got := testutil.ToFloat64(m.storeErrors.WithLabelValues("postgres", "reserve")); got != tt.wantErrors {
				t.Errorf("idem_store_errors_total{op=reserve} = %v, want %v", got, tt.wantErrors)
			}
		})
	}

	// The health checker pings with a timeout of its own (no caller): a
	// store that misses it is down. Its shutdown's cancel is not.
	m := NewMetrics()
	mem := memory.New()
	st := InstrumentStore("postgres", endingStore{Store: mem, pingHangs: true}, m)
	defer st.Close()
	pctx, pcancel := context.WithDeadline(ctx, past)
	defer pcancel()
	if err := st.Ping(pctx); err == nil {
		t.Fatal("Ping() of a store that does not answer = nil")
	}
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	_ = st.Ping(cctx)
	if got := testutil.ToFloat64(m.storeErrors.WithLabelValues("postgres", "ping")); got != 1 {
		t.Errorf("idem_store_errors_total{op=ping} = %v, want 1 (the timed-out ping)", got)
	}
}
