package server

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/idemhq/idem"
	"github.com/idemhq/idem/internal/keyhash"
	"github.com/idemhq/idem/storage"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of idem's errors.
const ErrorDomain = idem.ErrorDomain

// ErrorInfo reasons. Every status Status makes from a sentinel carries one,
// so a client maps it back to exactly that sentinel.
const (
	ReasonNotFound          = "NOT_FOUND"
	ReasonLeaseLost         = idem.ReasonLeaseLost
	ReasonNotInProgress     = idem.ReasonNotInProgress
	ReasonUnavailable       = "STORE_UNAVAILABLE"
	ReasonClosed            = idem.ReasonStoreClosed
	ReasonResourceExhausted = "RESOURCE_EXHAUSTED"
	ReasonPermissionDenied  = "PERMISSION_DENIED"
	ReasonUnauthenticated   = "UNAUTHENTICATED"
	ReasonInvalidArgument   = "INVALID_ARGUMENT"
	ReasonDamaged           = "DAMAGED"
)

// internalMessage is all a caller learns of an unexpected error.
const internalMessage = "idem: internal error"

// Status turns any error a handler meets into the gRPC status error the
// caller receives. It is the only place idem maps errors: statuses pass
// through, sentinels of package idem become their code with an ErrorInfo
// (and a RetryInfo when retrying helps), context errors become
// DEADLINE_EXCEEDED or CANCELED, and anything else is logged and becomes
// INTERNAL without internals.
func (s *Service) Status(ctx context.Context, method string, err error) error {
	return mapError(ctx, s.logCall, s.opts.retryDelay, method, err)
}

// logCall writes a line about one call's trouble, unless too many of its
// kind were written this second; the next one written counts those left
// out (the metrics count every call).
func (s *Service) logCall(ctx context.Context, level slog.Level, msg string, args ...any) {
	ok, leftOut := s.quiet.Allow(msg)
	if !ok {
		return
	}
	if leftOut > 0 {
		args = append(args, "suppressed", leftOut)
	}
	s.opts.logger.Log(ctx, level, msg, args...)
}

func mapError(ctx context.Context, log func(context.Context, slog.Level, string, ...any), retry time.Duration, method string, err error) error {
	if err == nil {
		return nil
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return se.GRPCStatus().Err()
	}
	var timeout *storeTimeoutError
	var damaged *storage.DamagedError
	// Store messages of these kinds describe the caller's own record; for
	// the transient kinds the message may name hosts or SQL, so the caller
	// gets the sentinel's text and the log gets the rest.
	switch {
	case errors.Is(err, idem.ErrNotFound):
		return withInfo(codes.NotFound, err.Error(), ReasonNotFound, 0)
	case errors.Is(err, idem.ErrLeaseLost):
		return withInfo(codes.FailedPrecondition, err.Error(), ReasonLeaseLost, 0)
	case errors.Is(err, idem.ErrNotInProgress):
		return withInfo(codes.FailedPrecondition, err.Error(), ReasonNotInProgress, 0)
	case errors.Is(err, idem.ErrInvalidArgument):
		return withInfo(codes.InvalidArgument, err.Error(), ReasonInvalidArgument, 0)
	case errors.Is(err, idem.ErrPermissionDenied):
		return withInfo(codes.PermissionDenied, err.Error(), ReasonPermissionDenied, 0)
	case errors.Is(err, idem.ErrUnauthenticated):
		return withInfo(codes.Unauthenticated, err.Error(), ReasonUnauthenticated, 0)
	case errors.As(err, &damaged):
		// The message names the caller's own key; the log gets its hash
		// and the decoder's complaint.
		log(ctx, slog.LevelError, "stored record cannot be decoded", "method", method, "namespace", damaged.ID.Namespace,
			keyhash.Slog(damaged.ID.Key), "err", damaged.Err)
		return withInfo(codes.DataLoss, damaged.Public(), ReasonDamaged, 0)
	case errors.As(err, &timeout):
		// Its message names only the bound, never the store.
		log(ctx, slog.LevelWarn, "store timed out", "method", method, "timeout", timeout.d.String(), "err", timeout.cause)
		return withInfo(codes.Unavailable, timeout.Error(), ReasonUnavailable, retry)
	case errors.Is(err, idem.ErrClosed):
		log(ctx, slog.LevelWarn, "store closed", "method", method, "err", err)
		return withInfo(codes.Unavailable, idem.ErrClosed.Error(), ReasonClosed, retry)
	case errors.Is(err, idem.ErrUnavailable):
		log(ctx, slog.LevelWarn, "store unavailable", "method", method, "err", err)
		return withInfo(codes.Unavailable, idem.ErrUnavailable.Error(), ReasonUnavailable, retry)
	case errors.Is(err, idem.ErrResourceExhausted):
		return withInfo(codes.ResourceExhausted, idem.ErrResourceExhausted.Error(), ReasonResourceExhausted, retry)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "idem: deadline exceeded")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "idem: call canceled")
	}
	log(ctx, slog.LevelError, "internal error", "method", method, "err", err)
	return status.Error(codes.Internal, internalMessage)
}

func withInfo(c codes.Code, msg, reason string, retry time.Duration) error {
	details := []protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain}}
	if retry > 0 {
		details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(retry)})
	}
	st, err := status.New(c, msg).WithDetails(details...)
	if err != nil {
		return status.Error(c, msg)
	}
	return st.Err()
}

// itemError is a batch item's failure, mapped like a whole call's.
func (s *Service) itemError(ctx context.Context, method string, err error) (int32, string) {
	st := status.Convert(s.Status(ctx, method, err))
	return int32(st.Code()), st.Message()
}
