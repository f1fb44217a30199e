package pebble

import (
	"fmt"
	"testing"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/jonboulle/clockwork"

	"github.com/idemhq/idem/storage"
)

// damage overwrites id's stored value with bytes no codec version reads.
// The presence filter learns the key as a write through the store would
// tell it, or a filter built before the write would answer "absent".
func damage(t *testing.T, s *Store, id storage.ID) {
	t.Helper()
	key := recordKey(id)
	s.pres.mu.RLock()
	defer s.pres.mu.RUnlock()
	s.pres.add(key)
	if err := s.db.Set(key, []byte{9, 9, 9}, pebbledb.Sync); err != nil {
		t.Fatal(err)
	}
}

// TestDamagedRecordFailsOnlyItself: coalesced Reserves and Completes run
// as one batch, so a record that cannot be decoded must fail its own item
// only; failing the batch failed every caller coalesced with it, each
// time they retried together (the SQL store answers the same way).
func TestDamagedRecordFailsOnlyItself(t *testing.T) {
	ctx := testCtx(t)
	s := openTest(t, t.TempDir(), clockwork.NewFakeClockAt(epoch))
	defer s.Close()
	id := func(k string) storage.ID { return storage.ID{Tenant: "t", Namespace: "ns", Key: k} }
	damage(t, s, id("b"))
	rp := func(k string) storage.ReserveParams {
		return storage.ReserveParams{ID: id(k), Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour}
	}
	rs, err := s.BatchReserve(ctx, []storage.ReserveParams{rp("a"), rp("b"), rp("c")})
	if err != nil {
		t.Fatalf("BatchReserve() error = %v; want an answer per item", err)
	}
	if rs[1].Err == nil {
		t.Errorf("BatchReserve() damaged item = %v, want an error", rs[1].Outcome)
	}
	for _, i := range []int{0, 2} {
		if rs[i].Err != nil || rs[i].Outcome != storage.OutcomeReserved {
			t.Fatalf("BatchReserve() item %d = %v, %v; want RESERVED (only item 1's record is damaged)", i, rs[i].Outcome, rs[i].Err)
		}
	}
	cs, err := s.BatchComplete(ctx, []storage.CompleteParams{
		{ID: id("a"), Token: 1, Retention: time.Hour}, {ID: id("b"), Token: 1, Retention: time.Hour}, {ID: id("c"), Token: 1, Retention: time.Hour},
	})
	if err != nil {
		t.Fatalf("BatchComplete() error = %v; want an answer per item", err)
	}
	if cs[1].Err == nil {
		t.Errorf("BatchComplete() damaged item = %+v, want an error", cs[1].Record)
	}
	for _, i := range []int{0, 2} {
		if cs[i].Err != nil || cs[i].Record.State != storage.StateCompleted {
			t.Errorf("BatchComplete() item %d = %+v, %v; want COMPLETED", i, cs[i].Record, cs[i].Err)
		}
		if r, err := s.Lookup(ctx, id([]string{"a", "b", "c"}[i])); err != nil || r.State != storage.StateCompleted {
			t.Errorf("Lookup() item %d = %+v, %v; want it COMPLETED on disk", i, r, err)
		}
	}
}

// TestSweepPassesDamagedRecord: the sweep reads each due record before
// deleting it. One it cannot decode stopped every sweep at that record,
// the oldest due, so nothing expired was ever deleted again. It is left
// (without its record the sweep cannot tell it expired) and reported,
// and later steps start after it, whatever the step size.
func TestSweepPassesDamagedRecord(t *testing.T) {
	for _, batch := range []int{1, 2, 1000} {
		t.Run(fmt.Sprintf("batch=%d", batch), func(t *testing.T) {
			ctx := testCtx(t)
			clock := clockwork.NewFakeClockAt(epoch)
			s, err := Open(t.TempDir(), WithClock(clock), WithSweepInterval(0), WithSweepBatch(batch))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			id := func(k string) storage.ID { return storage.ID{Tenant: "t", Namespace: "ns", Key: k} }
			keys := []string{"a", "b", "c", "d", "e"}
			for _, k := range keys {
				if _, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id(k), Fingerprint: []byte("fp"), LeaseTTL: time.Second, Retention: time.Minute}); err != nil {
					t.Fatal(err)
				}
				clock.Advance(time.Second)
			}
			damage(t, s, id("a"))
			clock.Advance(time.Hour)
			n, err := s.Sweep(ctx)
			if n != len(keys)-1 {
				t.Errorf("Sweep() deleted %d, want %d (all but the damaged record)", n, len(keys)-1)
			}
			if err == nil {
				t.Errorf("Sweep() error = nil, want the damaged record reported")
			}
			if got := countPrefix(t, s, prefixRecord); got != 1 {
				t.Errorf("records left = %d, want 1 (the damaged one)", got)
			}
		})
	}
}
