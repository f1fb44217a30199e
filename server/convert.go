package server

import (
	"maps"
	"time"

	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/storage"
)

func resultFromProto(r *idemv1.Result) *storage.Result {
	if r == nil {
		return nil
	}
	res := &storage.Result{Code: r.GetCode(), Message: r.GetMessage(), Body: r.GetBody()}
	if len(r.GetMetadata()) > 0 {
		res.Metadata = maps.Clone(r.GetMetadata())
	}
	if len(r.GetDetails()) > 0 {
		res.Details = make([]storage.Detail, len(r.GetDetails()))
		for i, d := range r.GetDetails() {
			res.Details[i] = storage.Detail{TypeURL: d.GetTypeUrl(), Value: d.GetValue()}
		}
	}
	return res
}

func resultToProto(r *storage.Result) *idemv1.Result {
	if r == nil {
		return nil
	}
	out := &idemv1.Result{Code: r.Code, Message: r.Message, Body: r.Body}
	if len(r.Metadata) > 0 {
		out.Metadata = r.Metadata
	}
	if len(r.Details) > 0 {
		out.Details = make([]*anypb.Any, len(r.Details))
		for i, d := range r.Details {
			out.Details[i] = &anypb.Any{TypeUrl: d.TypeURL, Value: d.Value}
		}
	}
	return out
}

// recordBox holds a response's record and its timestamps, so converting a
// record costs one allocation instead of five.
type recordBox struct {
	rec idemv1.Record
	ts  [4]timestamppb.Timestamp
}

// timeInto sets *ts to t and returns it, or nil for the zero time.
func timeInto(ts *timestamppb.Timestamp, t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	ts.Seconds, ts.Nanos = t.Unix(), int32(t.Nanosecond())
	return ts
}

// recordToProto converts a record; withResult false leaves the result and
// the checkpoint out (a MISMATCH answer must not hand one request's result,
// or the state its holder saved, to another). The
// record's byte slices are shared, not copied: stores hand out records the
// caller owns (storage.Record.Clone), and the response only reads them.
func recordToProto(r *storage.Record, withResult bool) *idemv1.Record {
	if r == nil {
		return nil
	}
	return recordInto(new(recordBox), r, withResult)
}

// recordInto converts r into b, which must be fresh.
func recordInto(b *recordBox, r *storage.Record, withResult bool) *idemv1.Record {
	out := &b.rec
	out.Tenant = r.Tenant
	out.Namespace = r.Namespace
	out.Key = r.Key
	out.Fingerprint = r.Fingerprint
	out.State = stateToProto(r.State)
	out.Token = r.Token
	out.Attempts = r.Attempts
	out.CreatedAt = timeInto(&b.ts[0], r.CreatedAt)
	out.LeaseExpiresAt = timeInto(&b.ts[1], r.LeaseExpiresAt)
	out.CompletedAt = timeInto(&b.ts[2], r.CompletedAt)
	out.ExpiresAt = timeInto(&b.ts[3], r.ExpiresAt)
	if !withResult {
		return out
	}
	out.Result = resultToProto(r.Result)
	if r.Checkpoint != nil {
		out.Checkpoint = &idemv1.RecordCheckpoint{Phase: r.Checkpoint.Phase, Data: r.Checkpoint.Data}
	}
	return out
}

// withRecord allocates a response of type T together with its record, and
// returns both; the record is nil when r is.
func withRecord[T any](r *storage.Record, withResult bool) (*T, *idemv1.Record) {
	if r == nil {
		return new(T), nil
	}
	b := new(struct {
		resp T
		rec  recordBox
	})
	return &b.resp, recordInto(&b.rec, r, withResult)
}

func stateToProto(s storage.State) idemv1.RecordState {
	switch s {
	case storage.StateInProgress:
		return idemv1.RecordState_RECORD_STATE_IN_PROGRESS
	case storage.StateCompleted:
		return idemv1.RecordState_RECORD_STATE_COMPLETED
	case storage.StateReleased:
		return idemv1.RecordState_RECORD_STATE_RELEASED
	}
	return idemv1.RecordState_RECORD_STATE_UNSPECIFIED
}

func outcomeToProto(o storage.Outcome) idemv1.ReserveOutcome {
	switch o {
	case storage.OutcomeReserved:
		return idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED
	case storage.OutcomeCompleted:
		return idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED
	case storage.OutcomeInProgress:
		return idemv1.ReserveOutcome_RESERVE_OUTCOME_IN_PROGRESS
	case storage.OutcomeMismatch:
		return idemv1.ReserveOutcome_RESERVE_OUTCOME_MISMATCH
	}
	return idemv1.ReserveOutcome_RESERVE_OUTCOME_UNSPECIFIED
}

// reserveRecord is the record a Reserve answers with: without the result on
// MISMATCH, since that result belongs to a different request.
func reserveRecord(o storage.Outcome, r *storage.Record) *idemv1.Record {
	return recordToProto(r, o != storage.OutcomeMismatch)
}
