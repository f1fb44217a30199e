package storagetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

func (e *env) batchReserve(items []storage.ReserveParams) []storage.ReserveResult {
	e.t.Helper()
	res, err := e.s.BatchReserve(e.ctx, items)
	if err != nil {
		e.t.Fatalf("BatchReserve(%d items) error = %v, want nil", len(items), err)
	}
	if len(res) != len(items) {
		e.t.Fatalf("BatchReserve(%d items) returned %d results, want %d", len(items), len(res), len(items))
	}
	return res
}

func (e *env) batchComplete(items []storage.CompleteParams) []storage.CompleteResult {
	e.t.Helper()
	res, err := e.s.BatchComplete(e.ctx, items)
	if err != nil {
		e.t.Fatalf("BatchComplete(%d items) error = %v, want nil", len(items), err)
	}
	if len(res) != len(items) {
		e.t.Fatalf("BatchComplete(%d items) returned %d results, want %d", len(items), len(res), len(items))
	}
	return res
}

func testBatch(t *testing.T, h Harness) {
	t.Run("Empty", func(t *testing.T) {
		e := newEnv(t, h)
		e.batchReserve(nil)
		e.batchComplete(nil)
	})

	t.Run("ReserveMixedOutcomesInOrder", func(t *testing.T) {
		e := newEnv(t, h)
		completed, inProgress, mismatch, released, expired, fresh := e.id("completed"), e.id("in-progress"), e.id("mismatch"), e.id("released"), e.id("expired"), e.id("new")
		r := e.mustReserve(rp(completed, "fp", ttl, retention), storage.OutcomeReserved)
		done := e.complete(completed, r.Token, bigResult("c"), retention)
		r = e.mustReserve(rp(mismatch, "fp", ttl, retention), storage.OutcomeReserved)
		mis := e.complete(mismatch, r.Token, bigResult("m"), retention)
		r = e.mustReserve(rp(released, "fp", ttl, retention), storage.OutcomeReserved)
		e.release(released, r.Token)
		r = e.mustReserve(rp(expired, "fp", ttl, time.Second), storage.OutcomeReserved)
		e.complete(expired, r.Token, nil, time.Second)
		e.advance(2 * time.Second)
		live := e.mustReserve(rp(inProgress, "fp", ttl, retention), storage.OutcomeReserved)

		items := []storage.ReserveParams{
			rp(fresh, "fp", ttl, retention),
			rp(completed, "fp", ttl, retention),
			rp(inProgress, "fp", ttl, retention),
			rp(mismatch, "other", ttl, retention),
			rp(released, "fp", ttl, retention),
			rp(expired, "fp", ttl, retention),
		}
		res := e.batchReserve(items)
		want := []struct {
			out   storage.Outcome
			token uint64
		}{
			{storage.OutcomeReserved, 1},
			{storage.OutcomeCompleted, 1},
			{storage.OutcomeInProgress, 1},
			{storage.OutcomeMismatch, 1},
			{storage.OutcomeReserved, 2},
			{storage.OutcomeReserved, 1},
		}
		for i, r := range res {
			if r.Err != nil {
				t.Fatalf("BatchReserve() item %d (%s) error = %v, want nil", i, items[i].Key, r.Err)
			}
			if r.Outcome != want[i].out || r.Record == nil || r.Record.Key != items[i].Key || r.Record.Token != want[i].token {
				t.Fatalf("BatchReserve() item %d = %v %+v, want %v for key %q token %d", i, r.Outcome, r.Record, want[i].out, items[i].Key, want[i].token)
			}
		}
		if d := diffRecord(res[1].Record, done); d != "" {
			t.Fatalf("BatchReserve() COMPLETED item:\n%s", d)
		}
		if d := diffRecord(res[2].Record, live); d != "" {
			t.Fatalf("BatchReserve() IN_PROGRESS item:\n%s", d)
		}
		if d := diffRecord(res[3].Record, mis); d != "" {
			t.Fatalf("BatchReserve() MISMATCH item:\n%s", d)
		}
		for _, r := range res {
			e.wantUnchanged(r.Record)
		}
	})

	t.Run("ReservePerItemParams", func(t *testing.T) {
		e := newEnv(t, h)
		res := e.batchReserve([]storage.ReserveParams{
			rp(e.id("a"), "fa", time.Minute, time.Hour),
			rp(e.id("b"), "fb", 2*time.Minute, 2*time.Hour),
		})
		for i, w := range []struct {
			fp         string
			lease, ret time.Duration
		}{{"fa", time.Minute, time.Hour}, {"fb", 2 * time.Minute, 2 * time.Hour}} {
			r := res[i].Record
			if string(r.Fingerprint) != w.fp {
				t.Fatalf("BatchReserve() item %d Fingerprint = %q, want %q", i, r.Fingerprint, w.fp)
			}
			e.wantAt(fmt.Sprintf("item %d LeaseExpiresAt", i), r.LeaseExpiresAt, r.CreatedAt, w.lease)
			e.wantAt(fmt.Sprintf("item %d ExpiresAt", i), r.ExpiresAt, r.CreatedAt, w.ret)
		}
	})

	t.Run("CompletePerItemErrors", func(t *testing.T) {
		e := newEnv(t, h)
		a, stale, b, done := e.id("a"), e.id("stale"), e.id("b"), e.id("done")
		for _, id := range []storage.ID{a, stale, b, done} {
			e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		}
		e.complete(done, 1, bigResult("first"), retention)
		items := []storage.CompleteParams{
			{ID: a, Token: 1, Result: bigResult("a"), Retention: time.Hour},
			{ID: stale, Token: 2, Result: bigResult("s"), Retention: time.Hour},
			{ID: e.id("absent"), Token: 1, Result: bigResult("x"), Retention: time.Hour},
			{ID: done, Token: 1, Result: bigResult("second"), Retention: time.Hour},
			{ID: b, Token: 1, Result: bigResult("b"), Retention: 2 * time.Hour},
		}
		res := e.batchComplete(items)
		wantErrs := []error{nil, storage.ErrLeaseLost, storage.ErrNotFound, storage.ErrLeaseLost, nil}
		for i, r := range res {
			if wantErrs[i] == nil {
				if r.Err != nil || r.Record == nil {
					t.Fatalf("BatchComplete() item %d (%s) = %+v, %v; want a record, nil", i, items[i].Key, r.Record, r.Err)
				}
				if r.Record.Key != items[i].Key || r.Record.State != storage.StateCompleted || !r.Record.Result.Equal(items[i].Result) {
					t.Fatalf("BatchComplete() item %d record = %+v, want key %q COMPLETED with its result", i, r.Record, items[i].Key)
				}
				e.wantAt(fmt.Sprintf("item %d ExpiresAt", i), r.Record.ExpiresAt, r.Record.CompletedAt, items[i].Retention)
				e.wantUnchanged(r.Record)
				continue
			}
			wantErr(t, fmt.Sprintf("BatchComplete() item %d (%s)", i, items[i].Key), r.Err, wantErrs[i])
		}
		if got := e.lookup(stale); got.State != storage.StateInProgress {
			t.Fatalf("Lookup(stale) state = %v, want IN_PROGRESS", got.State)
		}
		if got := e.lookup(done); !got.Result.Equal(bigResult("first")) {
			t.Fatalf("Lookup(done) Result = %+v, want the first result", got.Result)
		}
	})

	t.Run("ReserveMatchesSingle", func(t *testing.T) {
		// The same calls, one by one in one namespace and as one batch in
		// another, must answer and store the same: takeovers keep the
		// checkpoint and count attempts, leases and expiries follow the item.
		shared := newEnv(t, h)
		single, batch := shared.sub(t, "single"), shared.sub(t, "batch")
		cp := storage.Checkpoint{Phase: "p", Data: []byte{0, 1}}
		for _, e := range []*env{single, batch} {
			for _, k := range []string{"expired-lease", "released", "completed", "completed-expired", "mismatch-released", "mismatch-completed"} {
				e.mustReserve(rp(e.id(k), "fp", ttl, retention), storage.OutcomeReserved)
			}
			for _, k := range []string{"expired-lease", "released"} {
				if _, err := e.s.Checkpoint(e.ctx, e.id(k), 1, cp); err != nil {
					t.Fatalf("Checkpoint(%s) error = %v, want nil", k, err)
				}
			}
			e.release(e.id("released"), 1)
			e.release(e.id("mismatch-released"), 1)
			e.complete(e.id("completed"), 1, bigResult("c"), retention)
			e.complete(e.id("mismatch-completed"), 1, bigResult("c"), retention)
			e.complete(e.id("completed-expired"), 1, bigResult("c"), 10*time.Second)
		}
		shared.advance(ttl + time.Second)
		for _, e := range []*env{single, batch} {
			e.mustReserve(rp(e.id("live"), "fp", ttl, retention), storage.OutcomeReserved)
			e.mustReserve(rp(e.id("live-mismatch"), "fp", ttl, retention), storage.OutcomeReserved)
		}
		items := func(e *env) []storage.ReserveParams {
			var ps []storage.ReserveParams
			for _, kf := range [][2]string{{"new", "fp"}, {"expired-lease", "fp"}, {"released", "fp"}, {"completed", "fp"},
				{"completed-expired", "fp-new"}, {"mismatch-released", "other"}, {"mismatch-completed", "other"}, {"live", "fp"}, {"live-mismatch", "other"}} {
				ps = append(ps, rp(e.id(kf[0]), kf[1], 2*time.Minute, 3*time.Hour))
			}
			return ps
		}
		var want []storage.ReserveResult
		for _, p := range items(single) {
			out, rec, err := single.s.Reserve(single.ctx, p)
			if err != nil {
				t.Fatalf("Reserve(%s) error = %v, want nil", p.Key, err)
			}
			want = append(want, storage.ReserveResult{Outcome: out, Record: rec})
		}
		ps := items(batch)
		got := batch.batchReserve(ps)
		for i, p := range ps {
			if got[i].Err != nil || got[i].Outcome != want[i].Outcome {
				t.Fatalf("BatchReserve() item %s = %v, %v; Reserve() gave %v, nil", p.Key, got[i].Outcome, got[i].Err, want[i].Outcome)
			}
			if d := batch.diffAcross(got[i].Record, want[i].Record); d != "" {
				t.Fatalf("BatchReserve() item %s record differs from Reserve()'s:\n%s", p.Key, d)
			}
			if d := batch.diffAcross(batch.lookupOrNil(p.ID), single.lookupOrNil(single.id(p.Key))); d != "" {
				t.Fatalf("Lookup(%s) after BatchReserve() differs from after Reserve():\n%s", p.Key, d)
			}
		}
		// Pin the takeover rows, so single and batch cannot agree on a wrong answer.
		for _, i := range []int{1, 2} {
			if r := got[i].Record; got[i].Outcome != storage.OutcomeReserved || r.Token != 2 || r.Attempts != 2 || !sameCheckpoint(r.Checkpoint, &cp) {
				t.Fatalf("BatchReserve() item %s = %v token %d attempts %d checkpoint %+v, want RESERVED token 2 attempts 2 checkpoint %+v",
					ps[i].Key, got[i].Outcome, r.Token, r.Attempts, r.Checkpoint, cp)
			}
		}
	})

	t.Run("CompleteMatchesSingle", func(t *testing.T) {
		// As ReserveMatchesSingle, for every Complete outcome.
		shared := newEnv(t, h)
		single, batch := shared.sub(t, "single"), shared.sub(t, "batch")
		for _, e := range []*env{single, batch} {
			for _, k := range []string{"expired-lease", "taken-over", "stale", "retry", "other-result", "released", "expired"} {
				e.mustReserve(rp(e.id(k), "fp", ttl, retention), storage.OutcomeReserved)
			}
			if _, err := e.s.Checkpoint(e.ctx, e.id("expired-lease"), 1, storage.Checkpoint{Phase: "p", Data: []byte("d")}); err != nil {
				t.Fatalf("Checkpoint() error = %v, want nil", err)
			}
			e.complete(e.id("retry"), 1, bigResult("r"), retention)
			e.complete(e.id("other-result"), 1, bigResult("r"), retention)
			e.release(e.id("released"), 1)
			e.complete(e.id("expired"), 1, nil, 10*time.Second)
		}
		shared.advance(ttl + time.Second)
		for _, e := range []*env{single, batch} {
			e.mustReserve(rp(e.id("live"), "fp", ttl, retention), storage.OutcomeReserved)
			e.mustReserve(rp(e.id("taken-over"), "fp", ttl, retention), storage.OutcomeReserved)
			e.mustReserve(rp(e.id("stale"), "fp", ttl, retention), storage.OutcomeReserved)
		}
		items := func(e *env) []storage.CompleteParams {
			mk := func(k string, tok uint64, res *storage.Result) storage.CompleteParams {
				return storage.CompleteParams{ID: e.id(k), Token: tok, Result: res, Retention: 2 * time.Hour}
			}
			return []storage.CompleteParams{
				mk("live", 1, bigResult("live")), mk("expired-lease", 1, bigResult("el")), mk("taken-over", 2, bigResult("to")),
				mk("stale", 1, bigResult("st")), mk("retry", 1, bigResult("r")), mk("other-result", 1, bigResult("o")),
				mk("released", 1, bigResult("x")), mk("expired", 1, nil), mk("absent", 1, nil),
			}
		}
		wantErrs := []error{nil, nil, nil, storage.ErrLeaseLost, nil, storage.ErrLeaseLost, storage.ErrLeaseLost, storage.ErrNotFound, storage.ErrNotFound}
		ps := items(single)
		var want []storage.CompleteResult
		for i, p := range ps {
			rec, err := single.s.Complete(single.ctx, p)
			wantErr(t, fmt.Sprintf("Complete(%s)", p.Key), err, wantErrs[i])
			want = append(want, storage.CompleteResult{Record: rec, Err: err})
		}
		ps = items(batch)
		got := batch.batchComplete(ps)
		for i, p := range ps {
			wantErr(t, fmt.Sprintf("BatchComplete() item %s", p.Key), got[i].Err, wantErrs[i])
			if wantErrs[i] == nil {
				if d := batch.diffAcross(got[i].Record, want[i].Record); d != "" {
					t.Fatalf("BatchComplete() item %s record differs from Complete()'s:\n%s", p.Key, d)
				}
			}
			if d := batch.diffAcross(batch.lookupOrNil(p.ID), single.lookupOrNil(single.id(p.Key))); d != "" {
				t.Fatalf("Lookup(%s) after BatchComplete() differs from after Complete():\n%s", p.Key, d)
			}
		}
		if r := got[1].Record; r.Token != 1 || r.Attempts != 1 || r.Checkpoint == nil || r.Checkpoint.Phase != "p" {
			t.Fatalf("BatchComplete() item expired-lease = token %d attempts %d checkpoint %+v, want token 1 attempts 1 checkpoint kept", r.Token, r.Attempts, r.Checkpoint)
		}
	})

	t.Run("CompleteRetry", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		items := []storage.CompleteParams{{ID: id, Token: 1, Result: bigResult("r"), Retention: retention}}
		first := e.batchComplete(items)
		again := e.batchComplete(items)
		if first[0].Err != nil || again[0].Err != nil {
			t.Fatalf("BatchComplete() twice errors = %v, %v; want nil, nil", first[0].Err, again[0].Err)
		}
		if d := diffRecord(again[0].Record, first[0].Record); d != "" {
			t.Fatalf("BatchComplete() retry record:\n%s", d)
		}
	})

	t.Run("Thousand", func(t *testing.T) {
		e := newEnv(t, h)
		const n = 1000
		items := make([]storage.ReserveParams, n)
		comps := make([]storage.CompleteParams, n)
		for i := range items {
			id := e.id(fmt.Sprintf("key-%04d", (i*7919)%n))
			items[i] = rp(id, fmt.Sprintf("fp-%d", i), ttl, retention)
			comps[i] = storage.CompleteParams{ID: id, Token: 1, Result: &storage.Result{Body: []byte(id.Key)}, Retention: retention}
		}
		for i, r := range e.batchReserve(items) {
			if r.Err != nil || r.Outcome != storage.OutcomeReserved || r.Record == nil || r.Record.Key != items[i].Key || r.Record.Token != 1 {
				t.Fatalf("BatchReserve() item %d = %v %+v %v, want RESERVED key %q token 1", i, r.Outcome, r.Record, r.Err, items[i].Key)
			}
		}
		for i, r := range e.batchComplete(comps) {
			if r.Err != nil || r.Record == nil || r.Record.Key != comps[i].Key || r.Record.State != storage.StateCompleted {
				t.Fatalf("BatchComplete() item %d = %+v %v, want COMPLETED key %q", i, r.Record, r.Err, comps[i].Key)
			}
		}
		for i, r := range e.batchReserve(items) {
			if r.Err != nil || r.Outcome != storage.OutcomeCompleted || r.Record == nil || string(r.Record.Result.Body) != items[i].Key {
				t.Fatalf("BatchReserve() again item %d = %v %+v %v, want COMPLETED with body %q", i, r.Outcome, r.Record, r.Err, items[i].Key)
			}
		}
	})

	testBatchMatrix(t, h)
}

// lookupOrNil is the stored record, or nil when absent.
func (e *env) lookupOrNil(id storage.ID) *storage.Record {
	e.t.Helper()
	rec, err := e.s.Lookup(e.ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil || rec == nil {
		e.t.Fatalf("Lookup(%q) = %+v, %v; want a record or ErrNotFound", id.Key, rec, err)
	}
	return rec
}

// diffAcross is diffRecord for records of the same key in two namespaces,
// written by different calls: a store whose now is a server's clock moves
// between the calls, so its times need only agree within driftTolerance.
func (e *env) diffAcross(got, want *storage.Record) string {
	if got == nil || want == nil {
		return diffRecord(got, want)
	}
	g := got.Clone()
	g.Namespace = want.Namespace
	if _, exact := e.now(); !exact {
		for _, f := range []struct {
			g *time.Time
			w time.Time
		}{
			{&g.CreatedAt, want.CreatedAt}, {&g.LeaseExpiresAt, want.LeaseExpiresAt},
			{&g.CompletedAt, want.CompletedAt}, {&g.ExpiresAt, want.ExpiresAt},
		} {
			if d := f.g.Sub(f.w); !f.g.IsZero() && !f.w.IsZero() && d > -driftTolerance && d < driftTolerance {
				*f.g = f.w
			}
		}
	}
	return diffRecord(g, want)
}
