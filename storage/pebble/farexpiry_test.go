package pebble

import (
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/idemhq/idem/storage"
)

// A retention that puts ExpiresAt past 2262 wrapped to a time long gone in
// the record and its expiry key: the record read as absent at once, and
// the next Reserve handed the key out again with token 1.
func TestFarExpiryKeepsRecord(t *testing.T) {
	ctx := testCtx(t)
	clk := clockwork.NewFakeClockAt(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := openTest(t, t.TempDir(), clk)
	defer s.Close()
	id := storage.ID{Tenant: "t", Namespace: "ns", Key: "far"}
	p := storage.ReserveParams{ID: id, Fingerprint: []byte("f"), LeaseTTL: time.Minute, Retention: time.Duration(1<<63 - 1)}
	if out, _, err := s.Reserve(ctx, p); err != nil || out != storage.OutcomeReserved {
		t.Fatalf("Reserve() = %v, %v, want RESERVED", out, err)
	}
	if _, err := s.Lookup(ctx, id); err != nil {
		t.Errorf("Lookup() error = %v, want the record", err)
	}
	if out, _, err := s.Reserve(ctx, p); err != nil || out != storage.OutcomeInProgress {
		t.Errorf("second Reserve() = %v, %v, want IN_PROGRESS", out, err)
	}
	clk.Advance(time.Hour)
	if n, err := s.Sweep(ctx); err != nil || n != 0 {
		t.Errorf("Sweep() = %d, %v, want nothing swept", n, err)
	}
	if _, err := s.Lookup(ctx, id); err != nil {
		t.Errorf("Lookup() after a sweep error = %v, want the record", err)
	}
}
