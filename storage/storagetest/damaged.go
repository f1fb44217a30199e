package storagetest

import (
	"errors"
	"strconv"
	"strings"
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
	if !namesDamaged(rs[1].Err, b) {
		t.Errorf("BatchReserve() damaged item = %v, %v; want ErrDamaged naming key %q", rs[1].Outcome, rs[1].Err, b.Key)
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
	if !namesDamaged(cs[1].Err, b) {
		t.Errorf("BatchComplete() damaged item = %+v, %v; want ErrDamaged naming key %q", cs[1].Record, cs[1].Err, b.Key)
	}
	if _, err := e.s.Lookup(e.ctx, b); !namesDamaged(err, b) {
		t.Errorf("Lookup() of the damaged record error = %v, want ErrDamaged naming key %q", err, b.Key)
	}
	for _, i := range []int{0, 2} {
		if cs[i].Err != nil || cs[i].Record.State != storage.StateCompleted {
			t.Errorf("BatchComplete() item %d = %+v, %v; want COMPLETED", i, cs[i].Record, cs[i].Err)
		}
		if r, err := e.s.Lookup(e.ctx, []storage.ID{a, b, c}[i]); err != nil || r.State != storage.StateCompleted {
			t.Errorf("Lookup() item %d = %+v, %v; want it COMPLETED", i, r, err)
		}
	}
	// Listing the namespace names the record, so the operator knows which
	// key to delete; Stats counts it or names it too.
	if _, _, err := e.s.List(e.ctx, storage.ListParams{Tenant: a.Tenant, Namespace: a.Namespace, Limit: 10}); !namesDamaged(err, b) {
		t.Errorf("List() error = %v, want ErrDamaged naming key %q", err, b.Key)
	}
	if _, err := e.s.Stats(e.ctx, a.Tenant, a.Namespace); err != nil && !namesDamaged(err, b) {
		t.Errorf("Stats() error = %v, want none or ErrDamaged naming key %q", err, b.Key)
	}
	// Deleting it frees the key: that is what an operator deletes it for.
	if rec, err := e.s.Delete(e.ctx, b); err != nil || rec != nil {
		t.Fatalf("Delete() of the damaged record = %+v, %v; want it removed, answered without a record", rec, err)
	}
	e.mustReserve(rp(b, "fp", ttl, retention), storage.OutcomeReserved)
}

// namesDamaged reports whether err is ErrDamaged about id's record, with a
// message the caller can act on.
func namesDamaged(err error, id storage.ID) bool {
	var d *storage.DamagedError
	return errors.As(err, &d) && errors.Is(err, storage.ErrDamaged) && d.ID == id &&
		strings.Contains(d.Public(), strconv.Quote(id.Key))
}
