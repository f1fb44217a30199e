package observe

import (
	"context"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/storage"
)

// callState is what InstrumentStore saw of one Reserve call's store
// traffic: the server's wait loop reserves once, then again after waiting.
type callState struct {
	mu              sync.Mutex
	reserves        int
	firstInProgress bool
	firstAt         time.Time
}

type callStateKey struct{}

func (w *instrumented) noteReserve(ctx context.Context, o storage.Outcome, err error) {
	cs, ok := ctx.Value(callStateKey{}).(*callState)
	if !ok {
		return
	}
	cs.mu.Lock()
	cs.reserves++
	if cs.reserves == 1 && err == nil && o == storage.OutcomeInProgress {
		cs.firstInProgress, cs.firstAt = true, time.Now()
	}
	cs.mu.Unlock()
}

var protoOutcomes = map[idemv1.ReserveOutcome]storage.Outcome{
	idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED:    storage.OutcomeReserved,
	idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED:   storage.OutcomeCompleted,
	idemv1.ReserveOutcome_RESERVE_OUTCOME_IN_PROGRESS: storage.OutcomeInProgress,
	idemv1.ReserveOutcome_RESERVE_OUTCOME_MISMATCH:    storage.OutcomeMismatch,
}

var waitResults = map[idemv1.ReserveOutcome]string{
	idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED:    WaitReserved,
	idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED:   WaitCompleted,
	idemv1.ReserveOutcome_RESERVE_OUTCOME_IN_PROGRESS: WaitInProgress,
	idemv1.ReserveOutcome_RESERVE_OUTCOME_MISMATCH:    WaitMismatch,
}

// UnaryServerInterceptor derives idem_reserve_outcomes_total,
// idem_takeovers_total, idem_lease_lost_total, idem_waits_total and
// idem_wait_duration_seconds from the calls and answers of
// idem.v1.IdempotencyService, so the service itself needs no metrics
// code. Waits are seen through the store: use it with a store wrapped by
// InstrumentStore with the same Metrics. A Reserve that asked to wait but
// was answered IN_PROGRESS at once (too many waiters) counts in
// idem_rejected_total{reason="waiters"}.
func (m *Metrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		switch r := req.(type) {
		case *idemv1.ReserveRequest:
			var cs *callState
			if r.GetWait().AsDuration() > 0 {
				cs = &callState{}
				ctx = context.WithValue(ctx, callStateKey{}, cs)
			}
			resp, err := handler(ctx, req)
			m.reserved(r, resp, err, cs)
			return resp, err
		case *idemv1.BatchReserveRequest:
			resp, err := handler(ctx, req)
			if br, ok := resp.(*idemv1.BatchReserveResponse); ok && err == nil {
				for _, res := range br.GetResults() {
					if res.GetError() == nil {
						m.outcome(r.GetNamespace(), res.GetOutcome(), res.GetRecord())
					}
				}
			}
			return resp, err
		case *idemv1.BatchCompleteRequest:
			resp, err := handler(ctx, req)
			if br, ok := resp.(*idemv1.BatchCompleteResponse); ok && err == nil {
				for _, res := range br.GetResults() {
					if codes.Code(res.GetError().GetCode()) == codes.FailedPrecondition {
						m.LeaseLost(r.GetNamespace(), "BatchComplete")
					}
				}
			}
			return resp, err
		case *idemv1.CompleteRequest, *idemv1.ReleaseRequest, *idemv1.ExtendLeaseRequest, *idemv1.CheckpointRequest:
			resp, err := handler(ctx, req)
			if err != nil && isLeaseLost(err) {
				m.LeaseLost(req.(namespaced).GetNamespace(), methodName(info.FullMethod))
			}
			return resp, err
		}
		return handler(ctx, req)
	}
}

func (m *Metrics) outcome(ns string, o idemv1.ReserveOutcome, rec *idemv1.Record) {
	so, ok := protoOutcomes[o]
	if !ok {
		return
	}
	m.ReserveOutcome(ns, so)
	if so == storage.OutcomeReserved && rec.GetAttempts() > 1 {
		m.Takeover(ns)
	}
}

func (m *Metrics) reserved(r *idemv1.ReserveRequest, resp any, err error, cs *callState) {
	ns := r.GetNamespace()
	rr, _ := resp.(*idemv1.ReserveResponse)
	if err == nil && rr != nil {
		m.outcome(ns, rr.GetOutcome(), rr.GetRecord())
	}
	if cs == nil {
		return
	}
	cs.mu.Lock()
	reserves, waited, since := cs.reserves, cs.firstInProgress, cs.firstAt
	cs.mu.Unlock()
	switch {
	case !waited:
	case err != nil:
		// A wait the store ended is a wait too: left out, the waits and
		// their durations would miss exactly the ones an outage makes.
		result := WaitError
		if c := status.Code(err); c == codes.Canceled || c == codes.DeadlineExceeded || err == context.Canceled || err == context.DeadlineExceeded {
			result = WaitCanceled
		}
		m.Wait(ns, result, time.Since(since))
	case reserves == 1:
		m.Rejected(RejectWaiters)
	case rr != nil:
		m.Wait(ns, waitResults[rr.GetOutcome()], time.Since(since))
	}
}

func isLeaseLost(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.FailedPrecondition {
		return false
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return ei.GetReason() == "LEASE_LOST"
		}
	}
	return false
}

// methodName is the last element of a full method, "/pkg.Svc/Method" → "Method".
func methodName(full string) string {
	for i := len(full) - 1; i >= 0; i-- {
		if full[i] == '/' {
			return full[i+1:]
		}
	}
	return full
}
