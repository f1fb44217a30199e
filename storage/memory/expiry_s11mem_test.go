package memory

import (
	"context"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/idemhq/idem/storage"
)

// A retention that puts ExpiresAt past 2262 (where Unix nanoseconds stop
// fitting an int64) must keep the record, not make it absent at once.
func TestFarExpiryKeepsRecord(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	clk := clockwork.NewFakeClockAt(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := New(WithClock(clk), WithShards(1), WithSweepInterval(0))
	defer s.Close()

	const far = time.Duration(1<<63 - 1) // about 292 years: ExpiresAt in 2318
	p := storage.ReserveParams{ID: id("far"), Fingerprint: []byte("f"), LeaseTTL: time.Minute, Retention: far}
	if out, _, err := s.Reserve(ctx, p); err != nil || out != storage.OutcomeReserved {
		t.Fatalf("Reserve() = %v, %v, want RESERVED", out, err)
	}
	if r, err := s.Lookup(ctx, id("far")); err != nil {
		t.Errorf("Lookup() after Reserve(retention %v) error = %v, want the record", far, err)
	} else if !r.ExpiresAt.After(clk.Now().Add(200 * 365 * 24 * time.Hour)) {
		t.Errorf("Lookup().ExpiresAt = %v, want past %v", r.ExpiresAt, clk.Now().Add(200*365*24*time.Hour))
	}
	if out, _, err := s.Reserve(ctx, p); err != nil || out != storage.OutcomeInProgress {
		t.Errorf("second Reserve() = %v, %v, want IN_PROGRESS", out, err)
	}
	if n := s.Sweep(); n != 0 {
		t.Errorf("Sweep() deleted %d records, want 0", n)
	}
}
