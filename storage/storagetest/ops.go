package storagetest

import (
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

func testComplete(t *testing.T, h Harness) {
	t.Run("Success", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		e.advance(10 * time.Second)
		got := e.complete(id, first.Token, bigResult("ok"), 2*time.Hour)
		want := first.Clone()
		want.State = storage.StateCompleted
		want.Result = bigResult("ok")
		want.LeaseExpiresAt = got.LeaseExpiresAt
		want.CompletedAt = got.CompletedAt
		want.ExpiresAt = got.ExpiresAt
		if d := diffRecord(got, want); d != "" {
			t.Fatalf("Complete() record:\n%s", d)
		}
		e.wantAt("CompletedAt", got.CompletedAt, first.CreatedAt, 10*time.Second)
		e.wantAt("ExpiresAt", got.ExpiresAt, got.CompletedAt, 2*time.Hour)
		if !sameTime(got.ExpiresAt, got.CompletedAt.Add(2*time.Hour)) {
			t.Fatalf("Complete() ExpiresAt = %v, want CompletedAt+2h = %v", got.ExpiresAt, got.CompletedAt.Add(2*time.Hour))
		}
		e.wantUnchanged(got)
	})

	t.Run("ShorterRetentionThanReserve", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, 10*time.Hour), storage.OutcomeReserved)
		got := e.complete(id, first.Token, bigResult("ok"), time.Minute)
		if !sameTime(got.ExpiresAt, got.CompletedAt.Add(time.Minute)) {
			t.Fatalf("Complete() ExpiresAt = %v, want CompletedAt+1m = %v", got.ExpiresAt, got.CompletedAt.Add(time.Minute))
		}
		e.advance(2 * time.Minute)
		e.wantAbsent(id)
	})

	t.Run("LargeResultRoundTrips", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		body := make([]byte, 1<<20)
		for i := range body {
			body[i] = byte(i * 131)
		}
		res := &storage.Result{Code: 0, Message: "ünïcode ✓ \t", Body: body,
			Details:  []storage.Detail{{TypeURL: "type.googleapis.com/x", Value: nil}, {TypeURL: "", Value: []byte{0}}},
			Metadata: map[string]string{"k:with:colons": "v\nwith\nnewlines", "x-bin": "AAH/"}}
		e.complete(id, first.Token, res, retention)
		got := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeCompleted)
		if !got.Result.Equal(res) {
			t.Fatalf("Reserve() Result of %d bytes did not round-trip (got code %d, message %q, body %d bytes, %d details, metadata %q)",
				res.Size(), got.Result.Code, got.Result.Message, len(got.Result.Body), len(got.Result.Details), got.Result.Metadata)
		}
	})

	t.Run("RetrySucceedsUnchanged", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		done := e.complete(id, first.Token, bigResult("ok"), retention)
		e.advance(time.Minute)
		again := e.complete(id, first.Token, bigResult("ok"), 3*retention)
		if d := diffRecord(again, done); d != "" {
			t.Fatalf("Complete() retry record:\n%s", d)
		}
		e.wantUnchanged(done)
	})

	t.Run("NilResultIsEmpty", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		done := e.complete(id, first.Token, nil, retention)
		if !done.Result.Equal(nil) {
			t.Fatalf("Complete(nil result) Result = %+v, want empty", done.Result)
		}
		e.complete(id, first.Token, &storage.Result{}, retention)
	})

	t.Run("DifferentResultIsLeaseLost", func(t *testing.T) {
		shared := newEnv(t, h)
		for _, tc := range []struct {
			name string
			mod  func(r *storage.Result)
		}{
			{"Code", func(r *storage.Result) { r.Code++ }},
			{"Message", func(r *storage.Result) { r.Message += "!" }},
			{"Body", func(r *storage.Result) { r.Body = append(r.Body, 0) }},
			{"DetailValue", func(r *storage.Result) { r.Details[1].Value = []byte{9} }},
			{"DetailOrder", func(r *storage.Result) { r.Details[0], r.Details[1] = r.Details[1], r.Details[0] }},
			{"MetadataValue", func(r *storage.Result) { r.Metadata["x-a"] = "2" }},
			{"MetadataExtra", func(r *storage.Result) { r.Metadata["x-c"] = "" }},
			{"MetadataRemoved", func(r *storage.Result) { delete(r.Metadata, "empty") }},
			// Same bytes, split differently: encodings that concatenate must not collide.
			{"MetadataBoundary", func(r *storage.Result) { delete(r.Metadata, "x-a"); r.Metadata["x-a1"] = "" }},
			{"DetailTypeURL", func(r *storage.Result) { r.Details[0].TypeURL += "2" }},
			{"DetailBoundary", func(r *storage.Result) {
				r.Details[0].TypeURL += string(r.Details[0].Value[:1])
				r.Details[0].Value = r.Details[0].Value[1:]
			}},
			{"DetailDropped", func(r *storage.Result) { r.Details = r.Details[:1] }},
			{"MessageBodyBoundary", func(r *storage.Result) {
				r.Message += string(r.Body[:1])
				r.Body = r.Body[1:]
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := shared.sub(t, tc.name)
				id := e.id("k")
				first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
				done := e.complete(id, first.Token, bigResult("ok"), retention)
				other := bigResult("ok")
				tc.mod(other)
				_, err := e.s.Complete(e.ctx, storage.CompleteParams{ID: id, Token: first.Token, Result: other, Retention: retention})
				wantErr(t, "Complete(different result)", err, storage.ErrLeaseLost)
				e.wantUnchanged(done)
			})
		}
	})

	t.Run("WrongTokenIsLeaseLost", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		for _, tok := range []uint64{0, 2, 1 << 40} {
			_, err := e.s.Complete(e.ctx, storage.CompleteParams{ID: id, Token: tok, Result: bigResult("x"), Retention: retention})
			wantErr(t, "Complete(wrong token)", err, storage.ErrLeaseLost)
		}
		e.wantUnchanged(first)
	})

	t.Run("ReleasedIsLeaseLost", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		rel := e.release(id, first.Token)
		_, err := e.s.Complete(e.ctx, storage.CompleteParams{ID: id, Token: first.Token, Result: bigResult("x"), Retention: retention})
		wantErr(t, "Complete(released record)", err, storage.ErrLeaseLost)
		e.wantUnchanged(rel)
	})

	t.Run("AbsentIsNotFound", func(t *testing.T) {
		e := newEnv(t, h)
		_, err := e.s.Complete(e.ctx, storage.CompleteParams{ID: e.id("nope"), Token: 1, Result: bigResult("x"), Retention: retention})
		wantErr(t, "Complete(absent)", err, storage.ErrNotFound)
		e.wantAbsent(e.id("nope"))
	})

	t.Run("AfterLeaseExpiryWithoutTakeover", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		e.advance(ttl + 10*time.Second)
		got := e.complete(id, first.Token, bigResult("late"), retention)
		if got.State != storage.StateCompleted || got.Token != first.Token {
			t.Fatalf("Complete() after lease expiry = state %v token %d, want COMPLETED token %d", got.State, got.Token, first.Token)
		}
		e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeCompleted)
	})

	testCompleteMatrix(t, h)
}

func testRelease(t *testing.T, h Harness) {
	t.Run("Success", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		got := e.release(id, first.Token)
		want := first.Clone()
		want.State = storage.StateReleased
		want.LeaseExpiresAt = got.LeaseExpiresAt
		if d := diffRecord(got, want); d != "" {
			t.Fatalf("Release() record:\n%s", d)
		}
		e.wantUnchanged(got)
	})

	t.Run("RetrySucceedsUnchanged", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		rel := e.release(id, first.Token)
		e.advance(time.Second)
		again := e.release(id, first.Token)
		if d := diffRecord(again, rel); d != "" {
			t.Fatalf("Release() retry record:\n%s", d)
		}
		e.wantUnchanged(rel)
	})

	t.Run("AfterLeaseExpiryWithoutTakeover", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		e.advance(ttl + time.Second)
		if got := e.release(id, first.Token); got.State != storage.StateReleased {
			t.Fatalf("Release() after lease expiry state = %v, want RELEASED", got.State)
		}
	})

	t.Run("WrongTokenIsLeaseLost", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		for _, tok := range []uint64{0, 2} {
			_, err := e.s.Release(e.ctx, id, tok)
			wantErr(t, "Release(wrong token)", err, storage.ErrLeaseLost)
		}
		e.wantUnchanged(first)
	})

	t.Run("WrongTokenOnReleasedIsLeaseLost", func(t *testing.T) {
		// Release is idempotent for its own token only: a stale holder must
		// not be told it released a record another holder released.
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		rel := e.release(id, first.Token)
		for _, tok := range []uint64{0, 2} {
			_, err := e.s.Release(e.ctx, id, tok)
			wantErr(t, "Release(wrong token, RELEASED)", err, storage.ErrLeaseLost)
		}
		e.wantUnchanged(rel)
		e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		rel2 := e.release(id, 2)
		_, err := e.s.Release(e.ctx, id, first.Token)
		wantErr(t, "Release(stale token, RELEASED by the new holder)", err, storage.ErrLeaseLost)
		e.wantUnchanged(rel2)
	})

	t.Run("CompletedIsLeaseLost", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		done := e.complete(id, first.Token, bigResult("ok"), retention)
		_, err := e.s.Release(e.ctx, id, first.Token)
		wantErr(t, "Release(completed record)", err, storage.ErrLeaseLost)
		e.wantUnchanged(done)
	})

	t.Run("AbsentIsNotFound", func(t *testing.T) {
		e := newEnv(t, h)
		_, err := e.s.Release(e.ctx, e.id("nope"), 1)
		wantErr(t, "Release(absent)", err, storage.ErrNotFound)
		e.wantAbsent(e.id("nope"))
	})

	testReleaseMatrix(t, h)
}

func testExtendLease(t *testing.T, h Harness) {
	t.Run("Success", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, ttl), storage.OutcomeReserved)
		e.advance(20 * time.Second)
		got, err := e.s.ExtendLease(e.ctx, id, first.Token, 5*time.Minute)
		if err != nil {
			t.Fatalf("ExtendLease() error = %v, want nil", err)
		}
		e.wantAt("LeaseExpiresAt", got.LeaseExpiresAt, first.CreatedAt, 20*time.Second+5*time.Minute)
		// The old expiry (CreatedAt+30s) is earlier, so the new lease end is the expiry.
		e.wantAt("ExpiresAt", got.ExpiresAt, first.CreatedAt, 20*time.Second+5*time.Minute)
		want := first.Clone()
		want.LeaseExpiresAt, want.ExpiresAt = got.LeaseExpiresAt, got.ExpiresAt
		if d := diffRecord(got, want); d != "" {
			t.Fatalf("ExtendLease() record:\n%s", d)
		}
		e.wantUnchanged(got)
		// Past the original lease and retention, the extended lease holds.
		e.advance(2 * time.Minute)
		e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeInProgress)
		e.advance(4 * time.Minute)
		if got := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved); got.Token != 1 {
			// Record outlived neither lease nor retention: it is absent, so token 1.
			t.Fatalf("Reserve() after extended lease and retention ended token = %d, want 1 (new record)", got.Token)
		}
	})

	t.Run("KeepsLongerExpiry", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, 10*time.Hour), storage.OutcomeReserved)
		got, err := e.s.ExtendLease(e.ctx, id, first.Token, time.Minute)
		if err != nil {
			t.Fatalf("ExtendLease() error = %v, want nil", err)
		}
		if !sameTime(got.ExpiresAt, first.ExpiresAt) {
			t.Fatalf("ExtendLease() ExpiresAt = %v, want unchanged %v", got.ExpiresAt, first.ExpiresAt)
		}
	})

	t.Run("AfterLeaseExpiryWithoutTakeover", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		e.advance(ttl + time.Second)
		if _, err := e.s.ExtendLease(e.ctx, id, first.Token, ttl); err != nil {
			t.Fatalf("ExtendLease() after lease expiry error = %v, want nil", err)
		}
		e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeInProgress)
	})

	testHolderRefused(t, h, "ExtendLease()", 2, func(e *env, id storage.ID, token uint64) error {
		_, err := e.s.ExtendLease(e.ctx, id, token, time.Hour)
		return err
	})

	testExtendLeaseMatrix(t, h)
}

func testCheckpoint(t *testing.T, h Harness) {
	t.Run("SetAndReplace", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		for _, cp := range []storage.Checkpoint{
			{Phase: "reserved-stock", Data: []byte("\x00sku-1\xff")},
			{Phase: "charged", Data: nil},
			{Phase: "", Data: []byte("only data")},
		} {
			got, err := e.s.Checkpoint(e.ctx, id, first.Token, cp)
			if err != nil {
				t.Fatalf("Checkpoint(%q) error = %v, want nil", cp.Phase, err)
			}
			want := first.Clone()
			want.Checkpoint = &cp
			if d := diffRecord(got, want); d != "" {
				t.Fatalf("Checkpoint(%q) record:\n%s", cp.Phase, d)
			}
			e.wantUnchanged(want)
		}
	})

	t.Run("AfterLeaseExpiryWithoutTakeover", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		e.advance(ttl + time.Second)
		if _, err := e.s.Checkpoint(e.ctx, id, first.Token, storage.Checkpoint{Phase: "p"}); err != nil {
			t.Fatalf("Checkpoint() after lease expiry error = %v, want nil", err)
		}
	})

	t.Run("SurvivesTakeover", func(t *testing.T) {
		shared := newEnv(t, h)
		for _, how := range []string{"LeaseExpiry", "Release", "ForceRelease"} {
			t.Run(how, func(t *testing.T) {
				e := shared.sub(t, how)
				id := e.id("k")
				first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
				cp := storage.Checkpoint{Phase: "step-2", Data: []byte("state")}
				if _, err := e.s.Checkpoint(e.ctx, id, first.Token, cp); err != nil {
					t.Fatalf("Checkpoint() error = %v, want nil", err)
				}
				switch how {
				case "LeaseExpiry":
					e.advance(ttl + time.Second)
				case "Release":
					e.release(id, first.Token)
				case "ForceRelease":
					if _, err := e.s.ForceRelease(e.ctx, id); err != nil {
						t.Fatalf("ForceRelease() error = %v, want nil", err)
					}
				}
				got := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
				if !sameCheckpoint(got.Checkpoint, &cp) || got.Attempts != 2 || got.Token != 2 {
					t.Fatalf("Reserve() takeover = checkpoint %+v attempts %d token %d, want %+v attempts 2 token 2", got.Checkpoint, got.Attempts, got.Token, cp)
				}
				// The new holder moves the checkpoint on; a third attempt sees it.
				cp2 := storage.Checkpoint{Phase: "step-3", Data: []byte("more")}
				if _, err := e.s.Checkpoint(e.ctx, id, got.Token, cp2); err != nil {
					t.Fatalf("Checkpoint(token 2) error = %v, want nil", err)
				}
				e.advance(ttl + time.Second)
				third := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
				if !sameCheckpoint(third.Checkpoint, &cp2) || third.Attempts != 3 || third.Token != 3 {
					t.Fatalf("Reserve() second takeover = checkpoint %+v attempts %d token %d, want %+v attempts 3 token 3", third.Checkpoint, third.Attempts, third.Token, cp2)
				}
				// Completing keeps the last checkpoint on the record.
				if done := e.complete(id, third.Token, bigResult("done"), retention); !sameCheckpoint(done.Checkpoint, &cp2) {
					t.Fatalf("Complete() Checkpoint = %+v, want %+v kept", done.Checkpoint, cp2)
				}
				if got := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeCompleted); !sameCheckpoint(got.Checkpoint, &cp2) || got.Attempts != 3 {
					t.Fatalf("Reserve() on COMPLETED = checkpoint %+v attempts %d, want %+v attempts 3", got.Checkpoint, got.Attempts, cp2)
				}
			})
		}
	})

	testHolderRefused(t, h, "Checkpoint()", 7, func(e *env, id storage.ID, token uint64) error {
		_, err := e.s.Checkpoint(e.ctx, id, token, storage.Checkpoint{Phase: "p", Data: []byte("d")})
		return err
	})

	testCheckpointMatrix(t, h)
}

func testFencing(t *testing.T, h Harness) {
	e := newEnv(t, h)
	id := e.id("k")
	first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
	e.advance(ttl + time.Second)
	cur := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
	if cur.Token <= first.Token {
		t.Fatalf("Reserve() takeover token = %d, want > %d", cur.Token, first.Token)
	}
	stale := first.Token
	for _, op := range []struct {
		name string
		call func() error
	}{
		{"Complete", func() error {
			_, err := e.s.Complete(e.ctx, storage.CompleteParams{ID: id, Token: stale, Result: bigResult("stale"), Retention: retention})
			return err
		}},
		{"Release", func() error { _, err := e.s.Release(e.ctx, id, stale); return err }},
		{"ExtendLease", func() error { _, err := e.s.ExtendLease(e.ctx, id, stale, time.Hour); return err }},
		{"Checkpoint", func() error {
			_, err := e.s.Checkpoint(e.ctx, id, stale, storage.Checkpoint{Phase: "stale"})
			return err
		}},
		{"BatchComplete", func() error {
			res, err := e.s.BatchComplete(e.ctx, []storage.CompleteParams{{ID: id, Token: stale, Result: bigResult("stale"), Retention: retention}})
			if err != nil {
				t.Fatalf("BatchComplete() error = %v, want nil (per-item error)", err)
			}
			if len(res) != 1 {
				t.Fatalf("BatchComplete() results = %d, want 1", len(res))
			}
			return res[0].Err
		}},
	} {
		t.Run(op.name, func(t *testing.T) {
			e := e.with(t)
			wantErr(t, op.name+"(stale token)", op.call(), storage.ErrLeaseLost)
			e.wantUnchanged(cur)
		})
	}
	t.Run("NewHolderCompletes", func(t *testing.T) {
		e := e.with(t)
		done := e.complete(id, cur.Token, bigResult("new"), retention)
		_, err := e.s.Complete(e.ctx, storage.CompleteParams{ID: id, Token: stale, Result: bigResult("new"), Retention: retention})
		wantErr(t, "Complete(stale token, winner's result)", err, storage.ErrLeaseLost)
		e.wantUnchanged(done)
	})
}

// testHolderRefused checks that op, an operation only the lease holder may
// do, fails with a wrong token (wrongToken), on a completed, released or
// absent record, and changes nothing.
func testHolderRefused(t *testing.T, h Harness, name string, wrongToken uint64, op func(e *env, id storage.ID, token uint64) error) {
	t.Run("Refused", func(t *testing.T) {
		shared := newEnv(t, h)
		for _, tc := range []struct {
			name  string
			token uint64
			setup func(e *env, id storage.ID)
			want  error
		}{
			{"WrongToken", wrongToken, func(e *env, id storage.ID) {}, storage.ErrLeaseLost},
			{"Completed", 1, func(e *env, id storage.ID) { e.complete(id, 1, bigResult("x"), retention) }, storage.ErrLeaseLost},
			{"Released", 1, func(e *env, id storage.ID) { e.release(id, 1) }, storage.ErrLeaseLost},
			{"Absent", 1, func(e *env, id storage.ID) { e.s.Delete(e.ctx, id) }, storage.ErrNotFound},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := shared.sub(t, tc.name)
				id := e.id("k")
				e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
				tc.setup(e, id)
				before, _ := e.s.Lookup(e.ctx, id)
				wantErr(t, name, op(e, id, tc.token), tc.want)
				if before != nil {
					e.wantUnchanged(before)
				} else {
					e.wantAbsent(id)
				}
			})
		}
	})
}
