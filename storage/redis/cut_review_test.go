package redis

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

// TestPipelineCutAfterErrorReply: the pipeline's first call is answered
// with a Redis error (a Release of a damaged record), the second with its
// record, then the connection drops. The second call was applied and its
// reply arrived; it must be answered, not failed with the whole pipeline.
func TestPipelineCutAfterErrorReply(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	marker := []byte("fp-answered-after-an-error-reply")
	direct, s, px := openCut(ctx, t, marker)

	bad := storage.ID{Tenant: "ta", Namespace: "ns", Key: "damaged"}
	if err := direct.c.Set(ctx, direct.nsPrefix(bad.Tenant, bad.Namespace)+bad.Key, "garbage", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	a := storage.ReserveParams{ID: storage.ID{Tenant: "tb", Namespace: "ns", Key: "a"}, Fingerprint: marker, LeaseTTL: time.Minute, Retention: time.Hour}
	b := storage.ReserveParams{ID: storage.ID{Tenant: "tc", Namespace: "ns", Key: "b"}, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour}
	rel := s.recordCall(releaseScript, bad, uint64(1))
	ra, rb := s.reserveCall(a), s.reserveCall(b)
	for _, c := range []*call{rel, ra, rb} {
		c.write = true
	}
	errs := s.runCalls(ctx, []*call{rel, ra, rb})
	px.mu.Lock()
	cuts := px.cuts
	px.mu.Unlock()
	if cuts != 1 {
		t.Fatalf("the proxy cut %d connections, want 1: nothing was checked", cuts)
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("runCalls()[%d] error = %v; want each call's own answer", i, err)
		}
	}
	if rel.err == nil {
		t.Errorf("Release of the damaged record = %v, %v; want an error", rel.res, rel.err)
	}
	if ra.err != nil {
		t.Fatalf("Reserve(a) error = %v; want RESERVED (its reply arrived)", ra.err)
	}
	if out, rec, err := parseReserve(a.ID, ra.res); err != nil || out != storage.OutcomeReserved || rec.Token != 1 {
		t.Errorf("Reserve(a) = %v %+v, %v; want RESERVED token 1", out, rec, err)
	}
	if !errors.Is(rb.err, storage.ErrUnavailable) {
		t.Errorf("Reserve(b) error = %v, want ErrUnavailable (its reply was lost)", rb.err)
	}
}
