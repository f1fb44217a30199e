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

func timeToProto(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// recordToProto converts a record; withResult false leaves the result out
// (a MISMATCH answer must not hand one request's result to another). The
// record's byte slices are shared, not copied: stores hand out records the
// caller owns (storage.Record.Clone), and the response only reads them.
func recordToProto(r *storage.Record, withResult bool) *idemv1.Record {
	if r == nil {
		return nil
	}
	out := &idemv1.Record{
		Tenant:         r.Tenant,
		Namespace:      r.Namespace,
		Key:            r.Key,
		Fingerprint:    r.Fingerprint,
		State:          stateToProto(r.State),
		Token:          r.Token,
		Attempts:       r.Attempts,
		CreatedAt:      timeToProto(r.CreatedAt),
		LeaseExpiresAt: timeToProto(r.LeaseExpiresAt),
		CompletedAt:    timeToProto(r.CompletedAt),
		ExpiresAt:      timeToProto(r.ExpiresAt),
	}
	if withResult {
		out.Result = resultToProto(r.Result)
	}
	if r.Checkpoint != nil {
		out.Checkpoint = &idemv1.RecordCheckpoint{Phase: r.Checkpoint.Phase, Data: r.Checkpoint.Data}
	}
	return out
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
