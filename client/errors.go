package client

import (
	"context"
	"errors"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/idemhq/idem"
)

// The sentinel errors of package idem, so that callers need import only
// this package: errors.Is(err, client.ErrLeaseLost).
var (
	ErrNotFound          = idem.ErrNotFound
	ErrLeaseLost         = idem.ErrLeaseLost
	ErrInvalidArgument   = idem.ErrInvalidArgument
	ErrUnavailable       = idem.ErrUnavailable
	ErrResourceExhausted = idem.ErrResourceExhausted
	ErrPermissionDenied  = idem.ErrPermissionDenied
	ErrUnauthenticated   = idem.ErrUnauthenticated
	ErrClosed            = idem.ErrClosed
	ErrNotInProgress     = idem.ErrNotInProgress
	ErrDamaged           = idem.ErrDamaged
)

// Reasons carried in google.rpc.ErrorInfo.
const (
	ReasonLeaseLost     = idem.ReasonLeaseLost
	ReasonNotInProgress = idem.ReasonNotInProgress
	ReasonStoreClosed   = idem.ReasonStoreClosed
	// ReasonKeyReused: the server interceptor saw a key reused with a different request.
	ReasonKeyReused = "IDEMPOTENCY_KEY_REUSED"
	// ReasonKeyMissing: the server interceptor requires a key and the call had none.
	ReasonKeyMissing = "IDEMPOTENCY_KEY_MISSING"
	// ErrorDomain is the google.rpc.ErrorInfo domain of idem's statuses,
	// the server's and the interceptors'.
	ErrorDomain = idem.ErrorDomain
)

// Error is a failed idem call: the gRPC status it arrived as and the
// sentinel it maps to. errors.Is(err, ErrLeaseLost) matches the sentinel;
// status.FromError(err) still returns the original status.
type Error struct {
	// Code and Message are those of the status.
	Code    codes.Code
	Message string
	// Reason is the google.rpc.ErrorInfo reason, if any.
	Reason string
	// RetryDelay is the google.rpc.RetryInfo delay, if any.
	RetryDelay time.Duration

	sentinel error
	st       *status.Status
}

func (e *Error) Error() string {
	if e.sentinel == nil {
		return "idem: " + e.Code.String() + ": " + e.Message
	}
	if e.Message == "" {
		return e.sentinel.Error()
	}
	if strings.HasPrefix(e.Message, e.sentinel.Error()) {
		return e.Message // the server already named the sentinel
	}
	return e.sentinel.Error() + ": " + e.Message
}

// Unwrap returns the sentinel of package idem the status maps to, or nil.
func (e *Error) Unwrap() error { return e.sentinel }

// GRPCStatus returns the status the error arrived as.
func (e *Error) GRPCStatus() *status.Status { return e.st }

// sentinelFor maps a code (and ErrorInfo reason) to the sentinel the server
// mapped from. DEADLINE_EXCEEDED reaching here means idem's own timeout, not
// the caller's, so it is a transient unavailability.
func sentinelFor(c codes.Code, reason string) error {
	switch c {
	case codes.NotFound:
		return ErrNotFound
	case codes.FailedPrecondition:
		if reason == ReasonNotInProgress {
			return ErrNotInProgress
		}
		return ErrLeaseLost
	case codes.InvalidArgument:
		return ErrInvalidArgument
	case codes.Unavailable, codes.DeadlineExceeded:
		if reason == ReasonStoreClosed {
			return ErrClosed
		}
		return ErrUnavailable
	case codes.ResourceExhausted:
		return ErrResourceExhausted
	case codes.PermissionDenied:
		return ErrPermissionDenied
	case codes.Unauthenticated:
		return ErrUnauthenticated
	case codes.DataLoss:
		return ErrDamaged
	}
	return nil
}

// mapError turns an error from a gRPC call (or an in-process server) into
// the client's error contract: ctx.Err() when the caller's own context
// ended, otherwise an *Error wrapping the sentinel.
func mapError(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		c := status.Code(err)
		if c == codes.Canceled || c == codes.DeadlineExceeded || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return ctxErr
		}
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		st = status.New(codes.Unknown, err.Error())
	}
	return errorFromStatus(st)
}

func errorFromStatus(st *status.Status) *Error {
	e := &Error{Code: st.Code(), Message: st.Message(), st: st}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			e.Reason = d.GetReason()
		case *errdetails.RetryInfo:
			e.RetryDelay = d.GetRetryDelay().AsDuration()
		}
	}
	e.sentinel = sentinelFor(e.Code, e.Reason)
	return e
}

// retryDelayOf returns the RetryInfo delay carried by a status error.
func retryDelayOf(err error) (time.Duration, bool) {
	st, ok := status.FromError(err)
	if !ok {
		return 0, false
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return ri.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}
