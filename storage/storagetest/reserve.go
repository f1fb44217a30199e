package storagetest

import (
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

func testReserve(t *testing.T, h Harness) {
	t.Run("AbsentCreatesInProgress", func(t *testing.T) {
		e := newEnv(t, h)
		now, exact := e.now()
		id := e.id("k1")
		rec := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		want := &storage.Record{ID: id, Fingerprint: []byte("fp"), State: storage.StateInProgress, Token: 1, Attempts: 1,
			CreatedAt: rec.CreatedAt, LeaseExpiresAt: rec.CreatedAt.Add(ttl), ExpiresAt: rec.CreatedAt.Add(retention)}
		if d := diffRecord(rec, want); d != "" {
			t.Fatalf("Reserve() record:\n%s", d)
		}
		if rec.CreatedAt.IsZero() {
			t.Fatalf("Reserve() CreatedAt is zero, want the store's now")
		}
		if exact && !sameTime(rec.CreatedAt, now) {
			t.Fatalf("Reserve() CreatedAt = %v, want %v", rec.CreatedAt, now)
		}
		e.wantUnchanged(rec)
	})

	t.Run("AbsentHoldsAtLeastTheLease", func(t *testing.T) {
		e := newEnv(t, h)
		rec := e.mustReserve(rp(e.id("k"), "fp", time.Minute, 10*time.Second), storage.OutcomeReserved)
		e.wantAt("ExpiresAt", rec.ExpiresAt, rec.CreatedAt, time.Minute)
	})

	t.Run("LiveInProgressIsUnchanged", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		e.advance(ttl - 5*time.Second)
		got := e.mustReserve(rp(id, "fp", time.Hour, 2*time.Hour), storage.OutcomeInProgress)
		if d := diffRecord(got, first); d != "" {
			t.Fatalf("Reserve() on live IN_PROGRESS record:\n%s", d)
		}
		e.wantUnchanged(first)
	})

	t.Run("EmptyFingerprintMatchesEmpty", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		e.mustReserve(rp(id, "", ttl, retention), storage.OutcomeReserved)
		p := rp(id, "", ttl, retention)
		p.Fingerprint = nil
		e.mustReserve(p, storage.OutcomeInProgress)
	})

	t.Run("ExpiredLeaseIsTakenOver", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		cp := storage.Checkpoint{Phase: "charged", Data: []byte{1, 2, 3}}
		if _, err := e.s.Checkpoint(e.ctx, id, first.Token, cp); err != nil {
			t.Fatalf("Checkpoint() error = %v, want nil", err)
		}
		e.advance(ttl + time.Second)
		got := e.mustReserve(rp(id, "fp", 2*ttl, retention), storage.OutcomeReserved)
		want := first.Clone()
		want.Token = 2
		want.Attempts = 2
		want.Checkpoint = &cp
		want.LeaseExpiresAt = got.LeaseExpiresAt
		want.ExpiresAt = got.ExpiresAt
		if d := diffRecord(got, want); d != "" {
			t.Fatalf("Reserve() takeover record:\n%s", d)
		}
		e.wantAt("LeaseExpiresAt", got.LeaseExpiresAt, first.CreatedAt, ttl+time.Second+2*ttl)
		e.wantAt("ExpiresAt", got.ExpiresAt, first.CreatedAt, ttl+time.Second+retention)
		e.wantUnchanged(got)
	})

	t.Run("ExactLeaseEndIsExpired", func(t *testing.T) {
		e := newEnv(t, h)
		if _, exact := e.now(); !exact {
			t.Skip("storagetest: clock does not know the store's exact now; boundary covered by ExpiredLeaseIsTakenOver")
		}
		id := e.id("k")
		e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		e.advance(ttl - time.Millisecond)
		e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeInProgress)
		e.advance(time.Millisecond)
		got := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		if got.Token != 2 {
			t.Fatalf("Reserve() at lease end token = %d, want 2", got.Token)
		}
	})

	t.Run("ReleasedIsTakenOver", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		e.release(id, first.Token)
		e.advance(time.Second)
		got := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		want := first.Clone()
		want.Token, want.Attempts = 2, 2
		want.LeaseExpiresAt = got.LeaseExpiresAt
		want.ExpiresAt = got.ExpiresAt
		if d := diffRecord(got, want); d != "" {
			t.Fatalf("Reserve() after Release:\n%s", d)
		}
		e.wantAt("LeaseExpiresAt", got.LeaseExpiresAt, first.CreatedAt, time.Second+ttl)
		e.wantAt("ExpiresAt", got.ExpiresAt, first.CreatedAt, time.Second+retention)
		// The new holder can finish; the released token cannot.
		if _, err := e.s.Complete(e.ctx, storage.CompleteParams{ID: id, Token: 1, Result: bigResult("old"), Retention: retention}); err == nil {
			t.Fatalf("Complete(token 1) after takeover error = nil, want ErrLeaseLost")
		}
		e.complete(id, 2, bigResult("new"), retention)
	})

	t.Run("TakeoverKeepsLongerRetention", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", time.Minute, 10*time.Hour), storage.OutcomeReserved)
		e.advance(2 * time.Minute)
		got := e.mustReserve(rp(id, "fp", time.Minute, time.Hour), storage.OutcomeReserved)
		if !sameTime(got.ExpiresAt, first.ExpiresAt) {
			t.Fatalf("Reserve() takeover ExpiresAt = %v, want unchanged %v", got.ExpiresAt, first.ExpiresAt)
		}
	})

	t.Run("TakeoverHoldsAtLeastTheLease", func(t *testing.T) {
		// A takeover whose lease outlasts the record's expiry must push the
		// expiry out, or the record vanishes under a live holder.
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", time.Minute, 2*time.Minute), storage.OutcomeReserved)
		e.release(id, first.Token)
		e.advance(time.Minute)
		got := e.mustReserve(rp(id, "fp", 10*time.Minute, time.Second), storage.OutcomeReserved)
		e.wantAt("LeaseExpiresAt", got.LeaseExpiresAt, first.CreatedAt, 11*time.Minute)
		e.wantAt("ExpiresAt", got.ExpiresAt, first.CreatedAt, 11*time.Minute)
		e.advance(5 * time.Minute)
		if again := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeInProgress); again.Token != got.Token {
			t.Fatalf("Reserve() within the taken-over lease token = %d, want %d", again.Token, got.Token)
		}
	})

	t.Run("BinaryFingerprint", func(t *testing.T) {
		// Fingerprints are hashes: any bytes, up to 64, compared exactly.
		e := newEnv(t, h)
		fp := make([]byte, 64)
		for i := range fp {
			fp[i] = byte(255 - i*7)
		}
		fp[0], fp[10], fp[63] = 0, 0xc3, 0 // NUL, a cut UTF-8 sequence, trailing NUL
		id := e.id("k")
		p := storage.ReserveParams{ID: id, Fingerprint: fp, LeaseTTL: ttl, Retention: retention}
		rec := e.mustReserve(p, storage.OutcomeReserved)
		if string(rec.Fingerprint) != string(fp) {
			t.Fatalf("Reserve() Fingerprint = %x, want %x", rec.Fingerprint, fp)
		}
		if got := e.lookup(id); string(got.Fingerprint) != string(fp) {
			t.Fatalf("Lookup() Fingerprint = %x, want %x", got.Fingerprint, fp)
		}
		e.mustReserve(p, storage.OutcomeInProgress)
		flipped := append([]byte(nil), fp...)
		flipped[40] ^= 1
		for name, other := range map[string][]byte{
			"trailing NUL dropped": fp[:63],
			"one bit flipped":      flipped,
			"NUL appended":         append(append([]byte(nil), fp...), 0),
		} {
			p.Fingerprint = other
			if out, _ := e.reserve(p); out != storage.OutcomeMismatch {
				t.Fatalf("Reserve(fingerprint with %s) outcome = %v, want MISMATCH", name, out)
			}
		}
		e.wantUnchanged(rec)
	})

	t.Run("CompletedReturnsStoredResult", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		done := e.complete(id, first.Token, bigResult("r"), retention)
		e.advance(2 * ttl) // past the old lease: still COMPLETED, never a takeover
		got := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeCompleted)
		if d := diffRecord(got, done); d != "" {
			t.Fatalf("Reserve() on COMPLETED record:\n%s", d)
		}
		if !got.Result.Equal(bigResult("r")) {
			t.Fatalf("Reserve() Result = %+v, want %+v", got.Result, bigResult("r"))
		}
		e.wantUnchanged(done)
	})

	t.Run("CompletedEmptyResult", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		e.complete(id, first.Token, &storage.Result{}, retention)
		got := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeCompleted)
		if !got.Result.Equal(&storage.Result{}) {
			t.Fatalf("Reserve() Result = %+v, want empty", got.Result)
		}
	})

	t.Run("Mismatch", func(t *testing.T) {
		shared := newEnv(t, h)
		for _, tc := range []struct {
			name  string
			setup func(e *env, id storage.ID)
		}{
			{"InProgress", func(e *env, id storage.ID) {}},
			{"InProgressLeaseExpired", func(e *env, id storage.ID) { e.advance(ttl + time.Second) }},
			{"Completed", func(e *env, id storage.ID) { e.complete(id, 1, bigResult("m"), retention) }},
			{"Released", func(e *env, id storage.ID) { e.release(id, 1) }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := shared.sub(t, tc.name)
				id := e.id("k")
				e.mustReserve(rp(id, "fp-a", ttl, retention), storage.OutcomeReserved)
				tc.setup(e, id)
				before := e.lookup(id)
				for _, fp := range []string{"fp-b", "", "fp-a\x00"} {
					got := e.mustReserve(rp(id, fp, ttl, retention), storage.OutcomeMismatch)
					if d := diffRecord(got, before); d != "" {
						t.Fatalf("Reserve(fingerprint %q) MISMATCH record:\n%s", fp, d)
					}
					e.wantUnchanged(before)
				}
			})
		}
	})

	testReserveMatrix(t, h)
}
