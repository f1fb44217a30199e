package storage

import (
	"errors"
	"testing"
	"time"
)

// The state machine's boundaries, tested on the pure functions: memory
// filters expired records before it calls them, so the conformance suite
// cannot see an off-by-one here through every backend.

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func completedRecord() *Record {
	return &Record{
		ID:          ID{Tenant: "t", Namespace: "n", Key: "k"},
		Fingerprint: []byte("fp"),
		State:       StateCompleted,
		Token:       3,
		Attempts:    3,
		Result:      &Result{},
		CreatedAt:   t0,
		CompletedAt: t0,
		ExpiresAt:   t0.Add(time.Minute),
	}
}

func TestTransitionExactExpiryIsAbsent(t *testing.T) {
	cur := completedRecord()
	at := cur.ExpiresAt // the record is gone at exactly expires_at
	before := at.Add(-time.Nanosecond)

	// One nanosecond before, the record is live.
	if out, _, _ := ApplyReserve(cur, ReserveParams{ID: cur.ID, Fingerprint: []byte("other"), LeaseTTL: time.Minute, Retention: time.Hour}, before); out != OutcomeMismatch {
		t.Fatalf("ApplyReserve(other fingerprint) 1ns before expiry = %v, want MISMATCH", out)
	}
	// At expires_at a Reserve with another fingerprint creates a new record.
	out, w, ans := ApplyReserve(cur, ReserveParams{ID: cur.ID, Fingerprint: []byte("other"), LeaseTTL: time.Minute, Retention: time.Hour}, at)
	if out != OutcomeReserved || w == nil || ans.Token != 1 || ans.Attempts != 1 {
		t.Fatalf("ApplyReserve() at expires_at = %v, %+v; want RESERVED with token 1", out, ans)
	}
	if _, _, err := ApplyComplete(cur, CompleteParams{ID: cur.ID, Token: cur.Token, Result: &Result{}, Retention: time.Hour}, at); !errors.Is(err, ErrNotFound) {
		t.Errorf("ApplyComplete() at expires_at error = %v, want ErrNotFound", err)
	}
	if _, _, err := ApplyRelease(cur, cur.Token, at); !errors.Is(err, ErrNotFound) {
		t.Errorf("ApplyRelease() at expires_at error = %v, want ErrNotFound", err)
	}
	if _, _, err := ApplyForceRelease(cur, at); !errors.Is(err, ErrNotFound) {
		t.Errorf("ApplyForceRelease() at expires_at error = %v, want ErrNotFound", err)
	}
	ip := cur.Clone()
	ip.State, ip.Result, ip.LeaseExpiresAt = StateInProgress, nil, at
	if _, err := ApplyExtendLease(ip, ip.Token, time.Minute, at); !errors.Is(err, ErrNotFound) {
		t.Errorf("ApplyExtendLease() at expires_at error = %v, want ErrNotFound", err)
	}
	if _, err := ApplyCheckpoint(ip, ip.Token, Checkpoint{Phase: "p"}, at); !errors.Is(err, ErrNotFound) {
		t.Errorf("ApplyCheckpoint() at expires_at error = %v, want ErrNotFound", err)
	}
}
