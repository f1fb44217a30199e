package cockroach

import (
	"fmt"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/memory"
	"github.com/idemhq/idem/storage/storagetest"
)

// pinnedClock is storagetest.Differential's clock for a store whose now is
// the database's: every Advance, 0 included, sets the offset so that the
// store's now is where the advances put it, undoing the real time passed.
type pinnedClock struct {
	s     *Store
	start time.Time
	adv   time.Duration
}

func (c *pinnedClock) Advance(d time.Duration) {
	c.adv += d
	c.s.offset.Store(c.start.Add(c.adv).Sub(time.Now()).Microseconds())
}

// TestDifferential makes the same random calls, batches naming a record
// more than once among them, on this store and on the memory store, and
// wants the same answers.
func TestDifferential(t *testing.T) {
	base := postgresURL(t)
	for _, co := range []string{"0", "1"} {
		for seed := range uint64(3) {
			t.Run(fmt.Sprintf("coalesce=%s/seed=%d", co, seed), func(t *testing.T) {
				s := openTest(t, withParams(t, migratedURL(t, base), ParamCoalesce, co))
				defer s.Close()
				refClock := clockwork.NewFakeClock()
				ref := memory.New(memory.WithClock(refClock))
				defer ref.Close()
				storagetest.Differential(t, storagetest.DifferentialConfig{
					Ref: ref, RefClock: refClock, Store: s, Clock: &pinnedClock{s: s, start: time.Now()},
					Steps: 3000, Seed: seed, Repeats: true,
				})
			})
		}
	}
}

// TestBatchRepeatsApplyInOrder: a batch naming one record more than once
// (the server never sends one, the coalescer keeps them apart, other
// callers of a Store may) applies its items in order, each seeing the ones
// before it, as the memory and pebble stores do. One statement cannot touch
// a row twice, so a repeat waits for the next statement.
func TestBatchRepeatsApplyInOrder(t *testing.T) {
	ctx := testCtx(t)
	s := openTest(t, withParams(t, migratedURL(t, postgresURL(t)), ParamCoalesce, "0"))
	defer s.Close()
	ref := memory.New()
	defer ref.Close()
	id := storage.ID{Tenant: "t", Namespace: "ns", Key: "k"}
	rp := func(fp string) storage.ReserveParams {
		return storage.ReserveParams{ID: id, Fingerprint: []byte(fp), LeaseTTL: time.Minute, Retention: time.Hour}
	}
	other := rp("fp")
	other.Key = "j"
	reserves := []storage.ReserveParams{rp("fp"), rp("x"), other, rp("fp"), other}
	cp := func(body string) storage.CompleteParams {
		return storage.CompleteParams{ID: id, Token: 1, Result: &storage.Result{Body: []byte(body)}, Retention: time.Hour}
	}
	completes := []storage.CompleteParams{cp("a"), cp("b"), cp("a"), {ID: other.ID, Token: 1, Retention: time.Hour}}
	for _, st := range []storage.Store{ref, s} {
		rs, err := st.BatchReserve(ctx, reserves)
		if err != nil {
			t.Fatalf("%T.BatchReserve() error = %v", st, err)
		}
		want := []storage.Outcome{storage.OutcomeReserved, storage.OutcomeMismatch, storage.OutcomeReserved, storage.OutcomeInProgress, storage.OutcomeInProgress}
		for i, r := range rs {
			if r.Err != nil || r.Outcome != want[i] || r.Record.Token != 1 {
				t.Errorf("%T.BatchReserve() item %d = %v %+v, %v; want %v token 1", st, i, r.Outcome, r.Record, r.Err, want[i])
			}
		}
		cs, err := st.BatchComplete(ctx, completes)
		if err != nil {
			t.Fatalf("%T.BatchComplete() error = %v", st, err)
		}
		for i, wantErr := range []bool{false, true, false, false} {
			if (cs[i].Err != nil) != wantErr {
				t.Errorf("%T.BatchComplete() item %d error = %v, want error %v", st, i, cs[i].Err, wantErr)
			}
		}
		if rec, err := st.Lookup(ctx, id); err != nil || string(rec.Result.Body) != "a" {
			t.Errorf("%T.Lookup() = %+v, %v; want completed with the first result", st, rec, err)
		}
	}

	// Enough items that sorting them by ID must keep a record's items in
	// their order (Go's unstable sort moves them from 13 items on): the
	// first Complete of each record wins.
	var many []storage.CompleteParams
	for i := range 15 {
		k := storage.ID{Tenant: "t", Namespace: "many", Key: string(rune('a' + i%3))}
		if i < 3 {
			if _, _, err := s.Reserve(ctx, storage.ReserveParams{ID: k, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour}); err != nil {
				t.Fatal(err)
			}
		}
		many = append(many, storage.CompleteParams{ID: k, Token: 1, Result: &storage.Result{Code: int32(i)}, Retention: time.Hour})
	}
	cs, err := s.BatchComplete(ctx, many)
	if err != nil {
		t.Fatalf("BatchComplete() error = %v", err)
	}
	for i, r := range cs {
		if (r.Err == nil) != (i < 3) {
			t.Errorf("BatchComplete() item %d (key %s) error = %v; want only each key's first item to succeed", i, many[i].Key, r.Err)
		}
	}
}
