package storagetest

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

// The cases below fill in the operation × state × token table of the
// package documentation where the groups' main cases leave a cell open.

func testReserveMatrix(t *testing.T, h Harness) {
	t.Run("EmptyStoredFingerprintIsMismatch", func(t *testing.T) {
		// Empty equals only empty, however the store keeps it ('' or NULL).
		e := newEnv(t, h)
		id := e.id("k")
		p := rp(id, "", ttl, retention)
		p.Fingerprint = nil
		rec := e.mustReserve(p, storage.OutcomeReserved)
		for _, fp := range []string{"x", "\x00"} {
			got := e.mustReserve(rp(id, fp, ttl, retention), storage.OutcomeMismatch)
			if d := diffRecord(got, rec); d != "" {
				t.Fatalf("Reserve(fingerprint %q) MISMATCH record:\n%s", fp, d)
			}
		}
		e.wantUnchanged(rec)
	})

	t.Run("TakeoverRetentionOnlyGrows", func(t *testing.T) {
		shared := newEnv(t, h)
		for _, how := range []string{"LeaseExpiry", "Release"} {
			t.Run(how, func(t *testing.T) {
				e := shared.sub(t, how)
				id := e.id("k")
				first := e.mustReserve(rp(id, "fp", time.Minute, 10*time.Hour), storage.OutcomeReserved)
				takeover := func(token uint64) {
					if how == "Release" {
						e.release(id, token)
					}
					e.advance(2 * time.Minute)
				}
				takeover(1)
				got := e.mustReserve(rp(id, "fp", time.Minute, time.Hour), storage.OutcomeReserved)
				if got.Token != 2 || !sameTime(got.ExpiresAt, first.ExpiresAt) {
					t.Fatalf("Reserve() shorter takeover = token %d ExpiresAt %v, want token 2 ExpiresAt unchanged %v", got.Token, got.ExpiresAt, first.ExpiresAt)
				}
				takeover(2)
				got = e.mustReserve(rp(id, "fp", time.Minute, 20*time.Hour), storage.OutcomeReserved)
				if got.Token != 3 {
					t.Fatalf("Reserve() longer takeover token = %d, want 3", got.Token)
				}
				e.wantAt("ExpiresAt", got.ExpiresAt, first.CreatedAt, 4*time.Minute+20*time.Hour)
				e.wantUnchanged(got)
			})
		}
	})
}

func testCompleteMatrix(t *testing.T, h Harness) {
	t.Run("OtherTokenOnCompletedIsLeaseLost", func(t *testing.T) {
		// Idempotence is for the completing token only, whatever the result.
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		done := e.complete(id, first.Token, bigResult("ok"), retention)
		for _, tok := range []uint64{0, 2, math.MaxUint64} {
			_, err := e.s.Complete(e.ctx, storage.CompleteParams{ID: id, Token: tok, Result: bigResult("ok"), Retention: retention})
			wantErr(t, fmt.Sprintf("Complete(token %d, same result, COMPLETED)", tok), err, storage.ErrLeaseLost)
		}
		e.wantUnchanged(done)
	})

	t.Run("ExpiresAtFromNowNotLease", func(t *testing.T) {
		// COMPLETED needs no lease: retention counts from now even when the
		// lease would have held the record longer.
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", 10*time.Minute, time.Minute), storage.OutcomeReserved)
		e.advance(2 * time.Minute)
		got := e.complete(id, first.Token, nil, time.Minute)
		e.wantAt("CompletedAt", got.CompletedAt, first.CreatedAt, 2*time.Minute)
		if !sameTime(got.ExpiresAt, got.CompletedAt.Add(time.Minute)) {
			t.Fatalf("Complete() ExpiresAt = %v, want CompletedAt+1m = %v", got.ExpiresAt, got.CompletedAt.Add(time.Minute))
		}
		e.advance(time.Minute + time.Second)
		e.wantAbsent(id)
	})

	t.Run("AfterLeaseExpiryRecord", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		cp := storage.Checkpoint{Phase: "p", Data: []byte("d")}
		if _, err := e.s.Checkpoint(e.ctx, id, first.Token, cp); err != nil {
			t.Fatalf("Checkpoint() error = %v, want nil", err)
		}
		e.advance(ttl + 10*time.Second)
		got := e.complete(id, first.Token, bigResult("late"), 2*time.Hour)
		want := first.Clone()
		want.State, want.Result, want.Checkpoint = storage.StateCompleted, bigResult("late"), &cp
		want.LeaseExpiresAt, want.CompletedAt, want.ExpiresAt = got.LeaseExpiresAt, got.CompletedAt, got.ExpiresAt
		if d := diffRecord(got, want); d != "" {
			t.Fatalf("Complete() after lease expiry record:\n%s", d)
		}
		e.wantAt("CompletedAt", got.CompletedAt, first.CreatedAt, ttl+10*time.Second)
		e.wantAt("ExpiresAt", got.ExpiresAt, first.CreatedAt, ttl+10*time.Second+2*time.Hour)
		e.wantUnchanged(got)
	})

	t.Run("RetryWithEquivalentResult", func(t *testing.T) {
		// Result.Equal is the contract: nil and empty fields are equal, and
		// metadata has no order, however the store encodes them.
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		md := map[string]string{}
		for i := range 40 {
			md[fmt.Sprintf("k-%02d", i)] = fmt.Sprint(i)
		}
		done := e.complete(id, first.Token, &storage.Result{Code: 3, Details: []storage.Detail{{TypeURL: "t"}}, Metadata: md}, retention)
		md2 := map[string]string{}
		for i := 39; i >= 0; i-- {
			md2[fmt.Sprintf("k-%02d", i)] = fmt.Sprint(i)
		}
		again := e.complete(id, first.Token, &storage.Result{Code: 3, Message: "", Body: []byte{},
			Details: []storage.Detail{{TypeURL: "t", Value: []byte{}}}, Metadata: md2}, retention)
		if d := diffRecord(again, done); d != "" {
			t.Fatalf("Complete() retry with an equal result record:\n%s", d)
		}
		id2 := e.id("empty")
		e.mustReserve(rp(id2, "fp", ttl, retention), storage.OutcomeReserved)
		e.complete(id2, 1, &storage.Result{Body: []byte{}, Details: []storage.Detail{}, Metadata: map[string]string{}}, retention)
		e.complete(id2, 1, nil, retention)
	})
}

func testReleaseMatrix(t *testing.T, h Harness) {
	t.Run("AfterLeaseExpiryKeepsRecord", func(t *testing.T) {
		// Release past the lease changes the state only; its retry, later
		// still, changes nothing.
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		cp := storage.Checkpoint{Phase: "p", Data: []byte("d")}
		if _, err := e.s.Checkpoint(e.ctx, id, first.Token, cp); err != nil {
			t.Fatalf("Checkpoint() error = %v, want nil", err)
		}
		e.advance(ttl + time.Second)
		got := e.release(id, first.Token)
		want := first.Clone()
		want.State, want.Checkpoint, want.LeaseExpiresAt = storage.StateReleased, &cp, got.LeaseExpiresAt
		if d := diffRecord(got, want); d != "" {
			t.Fatalf("Release() after lease expiry record:\n%s", d)
		}
		e.advance(ttl)
		if d := diffRecord(e.release(id, first.Token), got); d != "" {
			t.Fatalf("Release() retry after lease expiry record:\n%s", d)
		}
		e.wantUnchanged(got)
	})
}

func testExtendLeaseMatrix(t *testing.T, h Harness) {
	t.Run("SetsLeaseFromNow", func(t *testing.T) {
		// The lease becomes now+ttl, shorter than before if so asked; the
		// record's expiry never drops.
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", 10*time.Minute, time.Hour), storage.OutcomeReserved)
		e.advance(time.Minute)
		got, err := e.s.ExtendLease(e.ctx, id, first.Token, time.Minute)
		if err != nil {
			t.Fatalf("ExtendLease() error = %v, want nil", err)
		}
		e.wantAt("LeaseExpiresAt", got.LeaseExpiresAt, first.CreatedAt, 2*time.Minute)
		want := first.Clone()
		want.LeaseExpiresAt = got.LeaseExpiresAt
		if d := diffRecord(got, want); d != "" {
			t.Fatalf("ExtendLease(shorter) record:\n%s", d)
		}
		e.advance(time.Minute + time.Second)
		if got := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved); got.Token != 2 {
			t.Fatalf("Reserve() after the shortened lease token = %d, want 2", got.Token)
		}
	})

	t.Run("AfterLeaseExpiryRecord", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		e.advance(ttl + time.Second)
		got, err := e.s.ExtendLease(e.ctx, id, first.Token, time.Minute)
		if err != nil {
			t.Fatalf("ExtendLease() after lease expiry error = %v, want nil", err)
		}
		e.wantAt("LeaseExpiresAt", got.LeaseExpiresAt, first.CreatedAt, ttl+time.Second+time.Minute)
		want := first.Clone()
		want.LeaseExpiresAt = got.LeaseExpiresAt
		if d := diffRecord(got, want); d != "" {
			t.Fatalf("ExtendLease() after lease expiry record:\n%s", d)
		}
		e.wantUnchanged(got)
	})
}

func testCheckpointMatrix(t *testing.T, h Harness) {
	t.Run("AfterLeaseExpiryDoesNotRenewLease", func(t *testing.T) {
		// Only ExtendLease renews: a late checkpoint is kept for whoever
		// takes over next.
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		e.advance(ttl + time.Second)
		cp := storage.Checkpoint{Phase: "late", Data: []byte{0}}
		got, err := e.s.Checkpoint(e.ctx, id, first.Token, cp)
		if err != nil {
			t.Fatalf("Checkpoint() after lease expiry error = %v, want nil", err)
		}
		want := first.Clone()
		want.Checkpoint = &cp
		if d := diffRecord(got, want); d != "" {
			t.Fatalf("Checkpoint() after lease expiry record:\n%s", d)
		}
		next := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		if next.Token != 2 || !sameCheckpoint(next.Checkpoint, &cp) {
			t.Fatalf("Reserve() after late checkpoint = token %d checkpoint %+v, want token 2 checkpoint %+v", next.Token, next.Checkpoint, cp)
		}
	})

	t.Run("EmptyCheckpointReplacesAndSurvives", func(t *testing.T) {
		// An empty phase with no data is a checkpoint, not "none" and not
		// "keep the last one".
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		for _, cp := range []storage.Checkpoint{{Phase: "a", Data: []byte("d")}, {}} {
			if _, err := e.s.Checkpoint(e.ctx, id, first.Token, cp); err != nil {
				t.Fatalf("Checkpoint(%+v) error = %v, want nil", cp, err)
			}
		}
		empty := &storage.Checkpoint{}
		if got := e.lookup(id); !sameCheckpoint(got.Checkpoint, empty) {
			t.Fatalf("Lookup() Checkpoint = %+v, want %+v", got.Checkpoint, empty)
		}
		e.release(id, first.Token)
		if got := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved); !sameCheckpoint(got.Checkpoint, empty) {
			t.Fatalf("Reserve() takeover Checkpoint = %+v, want %+v", got.Checkpoint, empty)
		}
	})
}

// testFencingMatrix holds a stale token against every way a record is taken
// over and every state the new holder then leaves it in.
func testFencingMatrix(t *testing.T, h Harness) {
	shared := newEnv(t, h)
	for _, how := range []string{"LeaseExpiry", "Release", "ForceRelease"} {
		for _, then := range []storage.State{storage.StateInProgress, storage.StateCompleted, storage.StateReleased} {
			name := how + "/" + then.String()
			t.Run(name, func(t *testing.T) {
				e := shared.sub(t, name)
				id := e.id("k")
				e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
				switch how {
				case "LeaseExpiry":
					e.advance(ttl + time.Second)
				case "Release":
					e.release(id, 1)
				case "ForceRelease":
					if _, err := e.s.ForceRelease(e.ctx, id); err != nil {
						t.Fatalf("ForceRelease() error = %v, want nil", err)
					}
				}
				cur := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
				switch then {
				case storage.StateCompleted:
					cur = e.complete(id, cur.Token, bigResult("new"), retention)
				case storage.StateReleased:
					cur = e.release(id, cur.Token)
				}
				for _, op := range []struct {
					name string
					call func() error
				}{
					{"Complete", func() error {
						// The new holder's own result: no retry of the stale one.
						_, err := e.s.Complete(e.ctx, storage.CompleteParams{ID: id, Token: 1, Result: bigResult("new"), Retention: retention})
						return err
					}},
					{"BatchComplete", func() error {
						return e.batchComplete([]storage.CompleteParams{{ID: id, Token: 1, Result: bigResult("new"), Retention: retention}})[0].Err
					}},
					{"Release", func() error { _, err := e.s.Release(e.ctx, id, 1); return err }},
					{"ExtendLease", func() error { _, err := e.s.ExtendLease(e.ctx, id, 1, time.Hour); return err }},
					{"Checkpoint", func() error {
						_, err := e.s.Checkpoint(e.ctx, id, 1, storage.Checkpoint{Phase: "stale"})
						return err
					}},
				} {
					wantErr(t, op.name+"(stale token)", op.call(), storage.ErrLeaseLost)
					e.wantUnchanged(cur)
				}
			})
		}
	}
}

func testExpiryMatrix(t *testing.T, h Harness) {
	t.Run("ExactExpiryEveryOp", func(t *testing.T) {
		// At expires_at exactly the record is gone for every call, and
		// the key starts over.
		shared := newEnv(t, h)
		if _, exact := shared.now(); !exact {
			t.Skip("storagetest: clock does not know the store's exact now; expiry covered by ExpiredHolderCannotResurrect")
		}
		for _, state := range []storage.State{storage.StateInProgress, storage.StateCompleted, storage.StateReleased} {
			t.Run(state.String(), func(t *testing.T) {
				e := shared.sub(t, state.String())
				id := e.id("k")
				first := e.mustReserve(rp(id, "fp", time.Minute, time.Minute), storage.OutcomeReserved)
				switch state {
				case storage.StateCompleted:
					e.advance(30 * time.Second)
					e.complete(id, 1, nil, 30*time.Second)
				case storage.StateReleased:
					e.release(id, 1)
				}
				now, _ := e.now()
				e.advance(first.CreatedAt.Add(time.Minute).Sub(now) - time.Millisecond)
				e.lookup(id)
				e.advance(time.Millisecond)
				// Listings see no more than Lookup does.
				if recs, _, err := e.s.List(e.ctx, storage.ListParams{Tenant: e.tenant, Namespace: e.ns, Limit: 10}); err != nil || len(recs) != 0 {
					t.Fatalf("List() at expires_at = %d records, %v; want none", len(recs), err)
				}
				if rows, err := e.s.Stats(e.ctx, e.tenant, e.ns); err != nil || len(rows) != 0 {
					t.Fatalf("Stats() at expires_at = %+v, %v; want no rows", rows, err)
				}
				for _, op := range []struct {
					name string
					call func() error
				}{
					{"Complete", func() error {
						_, err := e.s.Complete(e.ctx, storage.CompleteParams{ID: id, Token: 1, Result: nil, Retention: retention})
						return err
					}},
					{"Release", func() error { _, err := e.s.Release(e.ctx, id, 1); return err }},
					{"ExtendLease", func() error { _, err := e.s.ExtendLease(e.ctx, id, 1, time.Hour); return err }},
					{"Checkpoint", func() error { _, err := e.s.Checkpoint(e.ctx, id, 1, storage.Checkpoint{}); return err }},
					{"ForceRelease", func() error { _, err := e.s.ForceRelease(e.ctx, id); return err }},
				} {
					wantErr(t, op.name+"(at expires_at)", op.call(), storage.ErrNotFound)
					e.wantAbsent(id)
				}
				got := e.mustReserve(rp(id, "other", ttl, retention), storage.OutcomeReserved)
				if got.Token != 1 || got.Attempts != 1 {
					t.Fatalf("Reserve() at expires_at = token %d attempts %d, want a new record", got.Token, got.Attempts)
				}
			})
		}
	})
}

func testBatchMatrix(t *testing.T, h Harness) {
	t.Run("ReserveDuplicateKeys", func(t *testing.T) {
		// Repeats of one key apply in order, each seeing the one before.
		e := newEnv(t, h)
		fresh, lapsed, released, other := e.id("fresh"), e.id("lapsed"), e.id("released"), e.id("other")
		cp := storage.Checkpoint{Phase: "p", Data: []byte("d")}
		e.mustReserve(rp(lapsed, "fp", ttl, retention), storage.OutcomeReserved)
		if _, err := e.s.Checkpoint(e.ctx, lapsed, 1, cp); err != nil {
			t.Fatalf("Checkpoint() error = %v, want nil", err)
		}
		e.mustReserve(rp(released, "fp", ttl, retention), storage.OutcomeReserved)
		e.release(released, 1)
		e.advance(ttl + time.Second)
		items := []storage.ReserveParams{
			rp(fresh, "fp", ttl, retention),
			rp(lapsed, "fp", ttl, retention),
			rp(fresh, "fp", time.Hour, 2*time.Hour),
			rp(released, "fp", ttl, retention),
			rp(fresh, "other", ttl, retention),
			rp(other, "fp", ttl, retention),
			rp(lapsed, "fp", ttl, retention),
			rp(released, "fp", ttl, retention),
			rp(lapsed, "nope", ttl, retention),
		}
		want := []struct {
			out             storage.Outcome
			token, attempts uint64
		}{
			{storage.OutcomeReserved, 1, 1},
			{storage.OutcomeReserved, 2, 2},
			{storage.OutcomeInProgress, 1, 1},
			{storage.OutcomeReserved, 2, 2},
			{storage.OutcomeMismatch, 1, 1},
			{storage.OutcomeReserved, 1, 1},
			{storage.OutcomeInProgress, 2, 2},
			{storage.OutcomeInProgress, 2, 2},
			{storage.OutcomeMismatch, 2, 2},
		}
		res := e.batchReserve(items)
		first := map[storage.ID]*storage.Record{}
		for i, r := range res {
			if r.Err != nil || r.Record == nil || r.Outcome != want[i].out || r.Record.Key != items[i].Key ||
				r.Record.Token != want[i].token || uint64(r.Record.Attempts) != want[i].attempts {
				t.Fatalf("BatchReserve() item %d (%s) = %v %+v %v, want %v token %d attempts %d",
					i, items[i].Key, r.Outcome, r.Record, r.Err, want[i].out, want[i].token, want[i].attempts)
			}
			if f, ok := first[items[i].ID]; ok {
				if d := diffRecord(r.Record, f); d != "" {
					t.Fatalf("BatchReserve() item %d (%s, a repeat) record differs from the reserving item's:\n%s", i, items[i].Key, d)
				}
			} else {
				first[items[i].ID] = r.Record
			}
		}
		if r := res[1].Record; !sameCheckpoint(r.Checkpoint, &cp) {
			t.Fatalf("BatchReserve() takeover Checkpoint = %+v, want %+v", r.Checkpoint, cp)
		}
		for _, r := range first {
			e.wantUnchanged(r)
		}
	})

	t.Run("CompleteDuplicateKeys", func(t *testing.T) {
		e := newEnv(t, h)
		k, j := e.id("k"), e.id("j")
		e.mustReserve(rp(k, "fp", ttl, retention), storage.OutcomeReserved)
		e.mustReserve(rp(j, "fp", ttl, retention), storage.OutcomeReserved)
		items := []storage.CompleteParams{
			{ID: k, Token: 1, Result: bigResult("a"), Retention: time.Hour},
			{ID: j, Token: 2, Result: bigResult("j"), Retention: time.Hour},
			{ID: k, Token: 1, Result: bigResult("a"), Retention: 5 * time.Hour},
			{ID: k, Token: 1, Result: bigResult("b"), Retention: time.Hour},
			{ID: j, Token: 1, Result: bigResult("j"), Retention: time.Hour},
			{ID: k, Token: 2, Result: bigResult("a"), Retention: time.Hour},
		}
		wantErrs := []error{nil, storage.ErrLeaseLost, nil, storage.ErrLeaseLost, nil, storage.ErrLeaseLost}
		res := e.batchComplete(items)
		for i, r := range res {
			wantErr(t, fmt.Sprintf("BatchComplete() item %d (%s)", i, items[i].Key), r.Err, wantErrs[i])
		}
		if d := diffRecord(res[2].Record, res[0].Record); d != "" {
			t.Fatalf("BatchComplete() repeated item record differs from the completing item's:\n%s", d)
		}
		e.wantAt("ExpiresAt", res[0].Record.ExpiresAt, res[0].Record.CompletedAt, time.Hour)
		e.wantUnchanged(res[0].Record)
		e.wantUnchanged(res[4].Record)
	})
}

func testLookup(t *testing.T, h Harness) {
	t.Run("EveryState", func(t *testing.T) {
		// Lookup answers the record as the last call left it.
		e := newEnv(t, h)
		recs := map[string]*storage.Record{}
		recs["in-progress"] = e.mustReserve(rp(e.id("in-progress"), "fp", time.Hour, retention), storage.OutcomeReserved)
		r := e.mustReserve(rp(e.id("completed"), "fp", ttl, retention), storage.OutcomeReserved)
		recs["completed"] = e.complete(r.ID, r.Token, bigResult("c"), retention)
		r = e.mustReserve(rp(e.id("released"), "fp", ttl, retention), storage.OutcomeReserved)
		recs["released"] = e.release(r.ID, r.Token)
		r = e.mustReserve(rp(e.id("checkpointed"), "fp", time.Hour, retention), storage.OutcomeReserved)
		var err error
		if recs["checkpointed"], err = e.s.Checkpoint(e.ctx, r.ID, r.Token, storage.Checkpoint{Phase: "p", Data: []byte("d")}); err != nil {
			t.Fatalf("Checkpoint() error = %v, want nil", err)
		}
		e.advance(ttl + time.Second)
		for k, want := range recs {
			if d := diffRecord(e.lookup(e.id(k)), want); d != "" {
				t.Fatalf("Lookup(%s):\n%s", k, d)
			}
		}
	})

	t.Run("LeaseExpiredIsNoTakeover", func(t *testing.T) {
		// A lapsed lease stays IN_PROGRESS under its holder until a Reserve
		// takes it over; Lookup takes nothing over.
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		e.advance(ttl + time.Second)
		for range 2 {
			if d := diffRecord(e.lookup(id), first); d != "" {
				t.Fatalf("Lookup() after lease expiry:\n%s", d)
			}
		}
		if got := e.complete(id, first.Token, nil, retention); got.Token != 1 || got.Attempts != 1 {
			t.Fatalf("Complete() after Lookup = token %d attempts %d, want 1, 1", got.Token, got.Attempts)
		}
	})
}
