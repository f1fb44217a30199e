package redis

import (
	"context"
	"testing"

	"github.com/idemhq/idem/storage"
)

// TestDamagedRecordFailsOnlyItself: Reserves of one tenant share one script
// call, and Redis keeps the writes a failing script made before it failed.
// One damaged record must fail only its own item: the items around it are
// answered as they were applied.
func TestDamagedRecordFailsOnlyItself(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	s := openTest(ctx, t, "")
	bad := reserveParams("b")
	if err := s.c.Set(ctx, s.nsPrefix(bad.ID.Tenant, bad.ID.Namespace)+bad.ID.Key, "garbage", 0).Err(); err != nil {
		t.Fatal(err)
	}
	rs, err := s.BatchReserve(ctx, []storage.ReserveParams{reserveParams("a"), bad, reserveParams("c")})
	if err != nil {
		t.Fatal(err)
	}
	if rs[1].Err == nil {
		t.Errorf("damaged item = %v, want an error", rs[1].Outcome)
	}
	for _, i := range []int{0, 2} {
		if rs[i].Err != nil || rs[i].Outcome != storage.OutcomeReserved {
			t.Errorf("item %d = %v, %v; want RESERVED (only item 1's record is damaged)", i, rs[i].Outcome, rs[i].Err)
		}
	}
	if got, err := s.c.Get(ctx, s.nsPrefix(bad.ID.Tenant, bad.ID.Namespace)+bad.ID.Key).Result(); err != nil || got != "garbage" {
		t.Errorf("damaged record now %q, %v; want it left as it was", got, err)
	}
}
