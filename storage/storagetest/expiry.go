package storagetest

import (
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

func testExpiry(t *testing.T, h Harness) {
	t.Run("ExpiredIsAbsent", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		e.complete(id, first.Token, bigResult("ok"), time.Minute)
		e.advance(time.Minute - 5*time.Second)
		e.lookup(id)
		e.advance(10 * time.Second)
		e.wantAbsent(id)

		_, err := e.s.Complete(e.ctx, storage.CompleteParams{ID: id, Token: first.Token, Result: bigResult("ok"), Retention: time.Minute})
		wantErr(t, "Complete(expired)", err, storage.ErrNotFound)
		_, err = e.s.Release(e.ctx, id, first.Token)
		wantErr(t, "Release(expired)", err, storage.ErrNotFound)
		_, err = e.s.ExtendLease(e.ctx, id, first.Token, ttl)
		wantErr(t, "ExtendLease(expired)", err, storage.ErrNotFound)
		_, err = e.s.Checkpoint(e.ctx, id, first.Token, storage.Checkpoint{Phase: "p"})
		wantErr(t, "Checkpoint(expired)", err, storage.ErrNotFound)
		_, err = e.s.Delete(e.ctx, id)
		wantErr(t, "Delete(expired)", err, storage.ErrNotFound)
		_, err = e.s.ForceRelease(e.ctx, id)
		wantErr(t, "ForceRelease(expired)", err, storage.ErrNotFound)
		e.wantAbsent(id)
	})

	t.Run("ReserveCreatesAnew", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp-old", ttl, retention), storage.OutcomeReserved)
		if _, err := e.s.Checkpoint(e.ctx, id, first.Token, storage.Checkpoint{Phase: "old"}); err != nil {
			t.Fatalf("Checkpoint() error = %v, want nil", err)
		}
		e.complete(id, first.Token, bigResult("old"), time.Minute)
		e.advance(2 * time.Minute)
		// A different fingerprint is no MISMATCH: the old record is gone.
		got := e.mustReserve(rp(id, "fp-new", ttl, retention), storage.OutcomeReserved)
		want := &storage.Record{ID: id, Fingerprint: []byte("fp-new"), State: storage.StateInProgress, Token: 1, Attempts: 1,
			CreatedAt: got.CreatedAt, LeaseExpiresAt: got.CreatedAt.Add(ttl), ExpiresAt: got.CreatedAt.Add(retention)}
		if d := diffRecord(got, want); d != "" {
			t.Fatalf("Reserve() after expiry:\n%s", d)
		}
		e.wantAt("CreatedAt", got.CreatedAt, first.CreatedAt, 2*time.Minute)
		e.wantUnchanged(got)
	})

	t.Run("ExactExpiryIsAbsent", func(t *testing.T) {
		e := newEnv(t, h)
		if _, exact := e.now(); !exact {
			t.Skip("storagetest: clock does not know the store's exact now; expiry covered by ExpiredIsAbsent")
		}
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		e.complete(id, first.Token, nil, time.Minute)
		e.advance(time.Minute - time.Millisecond)
		e.lookup(id)
		e.advance(time.Millisecond)
		e.wantAbsent(id)
	})

	t.Run("RetentionPerRecord", func(t *testing.T) {
		e := newEnv(t, h)
		short, long := e.id("short"), e.id("long")
		for _, c := range []struct {
			id  storage.ID
			ret time.Duration
		}{{short, 10 * time.Minute}, {long, 100 * time.Minute}} {
			r := e.mustReserve(rp(c.id, "fp", ttl, retention), storage.OutcomeReserved)
			e.complete(c.id, r.Token, bigResult(c.id.Key), c.ret)
		}
		e.advance(50 * time.Minute)
		e.wantAbsent(short)
		e.mustReserve(rp(long, "fp", ttl, retention), storage.OutcomeCompleted)
		e.advance(51 * time.Minute)
		e.wantAbsent(long)
		e.mustReserve(rp(long, "fp", ttl, retention), storage.OutcomeReserved)
	})

	t.Run("InProgressKeptUntilLeaseEnds", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", 10*time.Minute, time.Minute), storage.OutcomeReserved)
		e.advance(5 * time.Minute)
		e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeInProgress)
		if _, err := e.s.Complete(e.ctx, storage.CompleteParams{ID: id, Token: first.Token, Result: nil, Retention: time.Minute}); err != nil {
			t.Fatalf("Complete() past retention but within lease error = %v, want nil", err)
		}
	})

	t.Run("InProgressGoneAfterLeaseAndRetention", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		e.mustReserve(rp(id, "fp", 10*time.Minute, time.Minute), storage.OutcomeReserved)
		e.advance(11 * time.Minute)
		e.wantAbsent(id)
		if got := e.mustReserve(rp(id, "other", ttl, retention), storage.OutcomeReserved); got.Token != 1 {
			t.Fatalf("Reserve() after expiry token = %d, want 1", got.Token)
		}
	})

	t.Run("ExpiredHolderCannotResurrect", func(t *testing.T) {
		// The last holder's token still matches the expired row; every
		// holder call must see absence and must not bring the row back.
		shared := newEnv(t, h)
		for _, tc := range []struct {
			name  string
			setup func(e *env, id storage.ID)
		}{
			{"InProgress", func(e *env, id storage.ID) {}},
			{"Completed", func(e *env, id storage.ID) { e.complete(id, 1, bigResult("x"), time.Minute) }},
			{"Released", func(e *env, id storage.ID) { e.release(id, 1) }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := shared.sub(t, tc.name)
				id := e.id("k")
				e.mustReserve(rp(id, "fp", ttl, time.Minute), storage.OutcomeReserved)
				if _, err := e.s.Checkpoint(e.ctx, id, 1, storage.Checkpoint{Phase: "p"}); err != nil {
					t.Fatalf("Checkpoint() error = %v, want nil", err)
				}
				tc.setup(e, id)
				e.advance(2 * time.Minute)
				for _, op := range []struct {
					name string
					call func() error
				}{
					{"Complete", func() error {
						_, err := e.s.Complete(e.ctx, storage.CompleteParams{ID: id, Token: 1, Result: bigResult("x"), Retention: retention})
						return err
					}},
					{"BatchComplete", func() error {
						res := e.batchComplete([]storage.CompleteParams{{ID: id, Token: 1, Result: bigResult("x"), Retention: retention}})
						return res[0].Err
					}},
					{"Release", func() error { _, err := e.s.Release(e.ctx, id, 1); return err }},
					{"ExtendLease", func() error { _, err := e.s.ExtendLease(e.ctx, id, 1, time.Hour); return err }},
					{"Checkpoint", func() error {
						_, err := e.s.Checkpoint(e.ctx, id, 1, storage.Checkpoint{Phase: "q"})
						return err
					}},
				} {
					wantErr(t, op.name+"(expired "+tc.name+")", op.call(), storage.ErrNotFound)
					e.wantAbsent(id)
				}
				// The key starts over: no old token, attempts or checkpoint.
				got := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
				if got.Token != 1 || got.Attempts != 1 || got.Checkpoint != nil || !got.Result.Equal(nil) {
					t.Fatalf("Reserve() after expiry = token %d attempts %d checkpoint %+v result %+v, want a new record", got.Token, got.Attempts, got.Checkpoint, got.Result)
				}
			})
		}
	})

	t.Run("ReleasedExpires", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, 5*time.Minute), storage.OutcomeReserved)
		e.release(id, first.Token)
		e.advance(6 * time.Minute)
		e.wantAbsent(id)
	})

	testExpiryMatrix(t, h)
}
