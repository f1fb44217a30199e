package storagetest

import (
	"testing"

	"github.com/idemhq/idem/storage"
)

// testDamaged: concurrent Reserves and Completes share batches (the
// coalescers), and a batch statement commits every item it applies, so a
// record that cannot be decoded must fail its own item only. Failing the
// call failed every caller coalesced with it, and on SQL dropped the
// answers of reservations the statement had made.
func testDamaged(t *testing.T, h Harness) {
	d, ok := h.(Damager)
	if !ok {
		t.Skip("the harness cannot damage a record")
	}
	e := newEnv(t, h)
	a, b, c := e.id("a"), e.id("b"), e.id("c")
	d.Damage(e.ctx, t, e.s, b)
	rs, err := e.s.BatchReserve(e.ctx, []storage.ReserveParams{rp(a, "fp", ttl, retention), rp(b, "fp", ttl, retention), rp(c, "fp", ttl, retention)})
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
	cs, err := e.s.BatchComplete(e.ctx, []storage.CompleteParams{
		{ID: a, Token: 1, Retention: retention}, {ID: b, Token: 1, Retention: retention}, {ID: c, Token: 1, Retention: retention},
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
		if r, err := e.s.Lookup(e.ctx, []storage.ID{a, b, c}[i]); err != nil || r.State != storage.StateCompleted {
			t.Errorf("Lookup() item %d = %+v, %v; want it COMPLETED", i, r, err)
		}
	}
	// Deleting it frees the key: that is what an operator deletes it for.
	if rec, err := e.s.Delete(e.ctx, b); err != nil || rec != nil {
		t.Fatalf("Delete() of the damaged record = %+v, %v; want it removed, answered without a record", rec, err)
	}
	e.mustReserve(rp(b, "fp", ttl, retention), storage.OutcomeReserved)
}
