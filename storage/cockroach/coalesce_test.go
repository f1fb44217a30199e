package cockroach

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

// TestCoalescedStatements runs concurrent Reserves and Completes on
// PostgreSQL: they share statements (fewer sends than calls), every answer
// is the one a call alone would get, and a call whose data the database
// refuses (a NUL byte in a TEXT key) fails alone.
func TestCoalescedStatements(t *testing.T) {
	ctx := testCtx(t)
	s, counter := openCounting(t, 0, ParamCoalesce, "1")

	const n = 200
	id := func(i int) storage.ID { return storage.ID{Tenant: "co", Namespace: "ns", Key: fmt.Sprintf("k%03d", i)} }
	bad := storage.ID{Tenant: "co", Namespace: "ns", Key: "bad\x00key"}
	counter.reset()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			out, rec, err := s.Reserve(ctx, storage.ReserveParams{ID: id(i), Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour})
			if err == nil && (out != storage.OutcomeReserved || rec.ID != id(i) || rec.Token != 1) {
				err = fmt.Errorf("Reserve = %v, %+v", out, rec)
			}
			if err == nil {
				rec, err = s.Complete(ctx, storage.CompleteParams{ID: id(i), Token: 1, Result: &storage.Result{Body: []byte(id(i).Key)}, Retention: time.Hour})
				if err == nil && (rec.State != storage.StateCompleted || string(rec.Result.Body) != id(i).Key) {
					err = fmt.Errorf("Complete = %+v", rec)
				}
			}
			errs[i] = err
		})
	}
	var badErr error
	wg.Go(func() {
		_, _, badErr = s.Reserve(ctx, storage.ReserveParams{ID: bad, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour})
	})
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("key %d: %v", i, err)
		}
	}
	if badErr == nil {
		t.Error("Reserve of a key with a NUL byte succeeded, want the database's refusal")
	}
	if _, queries := counter.get(); queries >= 2*n {
		t.Errorf("%d calls sent %d statements; want fewer (coalesced)", 2*n+1, queries)
	} else {
		t.Logf("%d calls sent %d statements", 2*n+1, queries)
	}
	// A batch with an item whose data the database refuses fails as a
	// whole, with an error that makes the coalescer run it item by item
	// (the one-by-one rerun itself is tested in storage/internal/coalesce).
	mixed := []storage.ReserveParams{
		{ID: id(n), Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour},
		{ID: bad, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour},
	}
	if _, err := s.BatchReserve(ctx, mixed); err == nil || !individually(ctx, err) {
		t.Errorf("BatchReserve with a NUL-byte key error = %v; want one that reruns item by item", err)
	}
	// A replay of each key answers COMPLETED with its own result.
	for i := range n {
		out, rec, err := s.Reserve(ctx, storage.ReserveParams{ID: id(i), Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour})
		if err != nil || out != storage.OutcomeCompleted || string(rec.Result.Body) != id(i).Key {
			t.Fatalf("replay of key %d = %v, %+v, %v", i, out, rec, err)
		}
	}
}
