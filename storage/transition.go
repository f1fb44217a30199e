package storage

import (
	"bytes"
	"fmt"
	"time"
)

// The functions below are the state machine of the package documentation as
// pure functions of the current record and the store's now. Backends that
// read, decide and write in Go (memory, pebble) call them under their
// per-key lock; backends that decide inside the database (SQL, Lua) encode
// the same rules and are held to them by storagetest.
//
// cur is the stored record or nil; an expired cur is treated as absent. They
// return the record to write (nil when nothing changes) and the record to
// answer with.

// ApplyReserve decides a Reserve.
func ApplyReserve(cur *Record, p ReserveParams, now time.Time) (out Outcome, write, answer *Record) {
	hold := max(p.Retention, p.LeaseTTL)
	if !cur.Live(now) {
		r := &Record{
			ID:             p.ID,
			Fingerprint:    bytes.Clone(p.Fingerprint),
			State:          StateInProgress,
			Token:          1,
			Attempts:       1,
			CreatedAt:      now,
			LeaseExpiresAt: now.Add(p.LeaseTTL),
			ExpiresAt:      now.Add(hold),
		}
		return OutcomeReserved, r, r
	}
	if !bytes.Equal(cur.Fingerprint, p.Fingerprint) {
		return OutcomeMismatch, nil, cur
	}
	switch {
	case cur.State == StateCompleted:
		return OutcomeCompleted, nil, cur
	case cur.State == StateInProgress && cur.LeaseExpiresAt.After(now):
		return OutcomeInProgress, nil, cur
	}
	r := cur.Clone()
	r.State = StateInProgress
	r.Token++
	r.Attempts++
	r.Result = nil
	r.CompletedAt = time.Time{}
	r.LeaseExpiresAt = now.Add(p.LeaseTTL)
	r.ExpiresAt = later(r.ExpiresAt, now.Add(hold))
	return OutcomeReserved, r, r
}

// ApplyComplete decides a Complete.
func ApplyComplete(cur *Record, p CompleteParams, now time.Time) (write, answer *Record, err error) {
	if !cur.Live(now) {
		return nil, nil, ErrNotFound
	}
	if cur.Token != p.Token {
		return nil, nil, fmt.Errorf("%w: token %d, record holds token %d", ErrLeaseLost, p.Token, cur.Token)
	}
	switch cur.State {
	case StateCompleted:
		if cur.Result.Equal(p.Result) {
			return nil, cur, nil
		}
		return nil, nil, fmt.Errorf("%w: record already completed with a different result", ErrLeaseLost)
	case StateReleased:
		return nil, nil, fmt.Errorf("%w: record was released", ErrLeaseLost)
	}
	r := cur.Clone()
	r.State = StateCompleted
	r.Result = p.Result.Clone()
	if r.Result == nil {
		r.Result = &Result{}
	}
	r.CompletedAt = now
	r.ExpiresAt = now.Add(p.Retention)
	return r, r, nil
}

// ApplyRelease decides a Release.
func ApplyRelease(cur *Record, token uint64, now time.Time) (write, answer *Record, err error) {
	if !cur.Live(now) {
		return nil, nil, ErrNotFound
	}
	if cur.Token != token {
		return nil, nil, fmt.Errorf("%w: token %d, record holds token %d", ErrLeaseLost, token, cur.Token)
	}
	switch cur.State {
	case StateReleased:
		return nil, cur, nil
	case StateCompleted:
		return nil, nil, fmt.Errorf("%w: record already completed", ErrLeaseLost)
	}
	r := cur.Clone()
	r.State = StateReleased
	return r, r, nil
}

// holder checks that token holds an IN_PROGRESS record.
func holder(cur *Record, token uint64, now time.Time) error {
	if !cur.Live(now) {
		return ErrNotFound
	}
	if cur.Token != token {
		return fmt.Errorf("%w: token %d, record holds token %d", ErrLeaseLost, token, cur.Token)
	}
	if cur.State != StateInProgress {
		return fmt.Errorf("%w: record is %s", ErrLeaseLost, cur.State)
	}
	return nil
}

// ApplyExtendLease decides an ExtendLease.
func ApplyExtendLease(cur *Record, token uint64, ttl time.Duration, now time.Time) (write *Record, err error) {
	if err := holder(cur, token, now); err != nil {
		return nil, err
	}
	r := cur.Clone()
	r.LeaseExpiresAt = now.Add(ttl)
	r.ExpiresAt = later(r.ExpiresAt, r.LeaseExpiresAt)
	return r, nil
}

// ApplyCheckpoint decides a Checkpoint.
func ApplyCheckpoint(cur *Record, token uint64, cp Checkpoint, now time.Time) (write *Record, err error) {
	if err := holder(cur, token, now); err != nil {
		return nil, err
	}
	r := cur.Clone()
	r.Checkpoint = &Checkpoint{Phase: cp.Phase, Data: bytes.Clone(cp.Data)}
	return r, nil
}

// ApplyForceRelease decides an operator's ForceRelease.
func ApplyForceRelease(cur *Record, now time.Time) (write, answer *Record, err error) {
	if !cur.Live(now) {
		return nil, nil, ErrNotFound
	}
	switch cur.State {
	case StateReleased:
		return nil, cur, nil
	case StateCompleted:
		return nil, nil, ErrNotInProgress
	}
	r := cur.Clone()
	r.State = StateReleased
	return r, r, nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
