package cockroach

import (
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

// TestDamagedRecordFailsOnlyItself: a batch statement commits every item
// it applies, so a row among its answers that cannot be decoded (a damaged
// result) must fail its own item only. Failing the whole call would drop
// the reservations the statement made: their callers, and the coalescer's
// item-by-item rerun, would see them as IN_PROGRESS held by nobody.
func TestDamagedRecordFailsOnlyItself(t *testing.T) {
	ctx := testCtx(t)
	s := openTest(t, withParams(t, migratedURL(t, postgresURL(t)), ParamCoalesce, "0"))
	defer s.Close()
	if _, err := s.pool.Exec(ctx, `INSERT INTO idem_records (tenant, namespace, idem_key, fingerprint, state, token, attempts, result, created_at, lease_expires_at, completed_at, expires_at)
		VALUES ('t', 'ns', 'b', 'fp', 2, 1, 1, '\xdeadbeef'::BYTEA, now(), now() + interval '1 hour', now(), now() + interval '1 hour')`); err != nil {
		t.Fatal(err)
	}
	id := func(k string) storage.ID { return storage.ID{Tenant: "t", Namespace: "ns", Key: k} }
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
	}
}
