package observe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/memory"
)

// A damaged record's answer names its key for the caller who owns it;
// otelgrpc copies the message of a DATA_LOSS (and INTERNAL, UNAVAILABLE…)
// answer into the span's status, and spans carry no key.
func TestSpanOfDamagedRecordCarriesNoKey(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	prev, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	defer func() { otel.SetTracerProvider(prev); otel.SetTextMapPropagator(prevProp); _ = tp.Shutdown(ctx) }()

	mem := memory.New()
	defer mem.Close()
	svc, err := server.New(damagedStore{mem}, server.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	lis := listen(t)
	gs := server.NewGRPCServer(svc, StatsHandler())
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	c := idemv1.NewIdempotencyServiceClient(dialBuf(t, lis))

	const key = "raw-key-damaged-span-4711"
	_, err = c.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: key})
	if status.Code(err) != codes.DataLoss || !strings.Contains(status.Convert(err).Message(), key) {
		t.Fatalf("Reserve() = %v, want DATA_LOSS naming the key", err)
	}
	spans := rec.Ended()
	for len(spans) < 1 && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
		spans = rec.Ended()
	}
	if len(spans) != 1 {
		t.Fatalf("recorded %d spans, want 1", len(spans))
	}
	s := spans[0]
	var all strings.Builder
	all.WriteString(s.Name() + " " + s.Status().Description)
	for _, a := range s.Attributes() {
		all.WriteString(" " + string(a.Key) + "=" + a.Value.Emit())
	}
	for _, e := range s.Events() {
		all.WriteString(" " + e.Name)
		for _, a := range e.Attributes {
			all.WriteString(" " + string(a.Key) + "=" + a.Value.Emit())
		}
	}
	if strings.Contains(all.String(), key) {
		t.Errorf("span %s carries the key: %s", s.Name(), all.String())
	}
	if !strings.Contains(s.Status().Description, "cannot be decoded") {
		t.Errorf("span status = %q, want it to say the record cannot be decoded", s.Status().Description)
	}
}

// partlyFailingStore answers a batch as a backend whose later round (or
// one tenant's pipeline) failed: the call succeeds, its items fail.
type partlyFailingStore struct{ *memory.Store }

func (s partlyFailingStore) BatchReserve(ctx context.Context, items []storage.ReserveParams) ([]storage.ReserveResult, error) {
	out := make([]storage.ReserveResult, len(items))
	for i := range out {
		out[i].Err = fmt.Errorf("%w: read tcp db:5432: connection reset", storage.ErrUnavailable)
	}
	return out, nil
}

func (s partlyFailingStore) BatchComplete(ctx context.Context, items []storage.CompleteParams) ([]storage.CompleteResult, error) {
	out := make([]storage.CompleteResult, len(items))
	for i := range out {
		if i == 0 {
			out[i].Err = storage.ErrLeaseLost // an answer, not a failure
			continue
		}
		out[i].Err = errors.New("idem: connection refused")
	}
	return out, nil
}

// A batch whose items the store failed is one failed store call: counted
// once, whatever the number of items, and counted although the call
// itself returned no error.
func TestBatchItemFailuresCountOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	m := NewMetrics()
	mem := memory.New()
	st := InstrumentStore("redis", partlyFailingStore{mem}, m)
	defer st.Close()
	items := make([]storage.ReserveParams, 5)
	citems := make([]storage.CompleteParams, 5)
	for i := range items {
		id := storage.ID{Tenant: "t", Namespace: "ns", Key: fmt.Sprint("k", i)}
		items[i] = storage.ReserveParams{ID: id, LeaseTTL: time.Minute, Retention: time.Hour}
		citems[i] = storage.CompleteParams{ID: id, Token: 1, Retention: time.Hour}
	}
	if _, err := st.BatchReserve(ctx, items); err != nil {
		t.Fatal(err)
	}
	if _, err := st.BatchComplete(ctx, citems); err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{"batch_reserve", "batch_complete"} {
		if got := testutil.ToFloat64(m.storeErrors.WithLabelValues("redis", op)); got != 1 {
			t.Errorf("idem_store_errors_total{op=%s} = %v, want 1 (one failed store call)", op, got)
		}
	}

	// Items that are answers (lease lost, not found) are no failure.
	m2 := NewMetrics()
	ok := InstrumentStore("memory", memory.New(), m2)
	defer ok.Close()
	if _, err := ok.BatchComplete(ctx, citems); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m2.storeErrors.WithLabelValues("memory", "batch_complete")); got != 0 {
		t.Errorf("idem_store_errors_total{op=batch_complete} for not-found items = %v, want 0", got)
	}
}
