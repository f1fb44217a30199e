package idem

import "errors"

// Sentinel errors. Backends wrap them with %w; the server maps each to one
// gRPC status; the client maps the status back to the same value.
var (
	// ErrNotFound: the record does not exist or has expired.
	ErrNotFound = errors.New("idem: record not found")
	// ErrLeaseLost: the caller's token no longer holds the record (another
	// attempt took over, the record already completed with a different
	// result, or it was released).
	ErrLeaseLost = errors.New("idem: lease lost")
	// ErrInvalidArgument: a request field is outside its limits.
	ErrInvalidArgument = errors.New("idem: invalid argument")
	// ErrUnavailable: the store cannot be reached; the call may be retried.
	ErrUnavailable = errors.New("idem: store unavailable")
	// ErrResourceExhausted: a rate or concurrency limit refused the call; retry later.
	ErrResourceExhausted = errors.New("idem: resource exhausted")
	// ErrPermissionDenied: the caller may not touch this tenant's records.
	ErrPermissionDenied = errors.New("idem: permission denied")
	// ErrUnauthenticated: the caller's credentials are missing or refused.
	ErrUnauthenticated = errors.New("idem: unauthenticated")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("idem: store closed")
	// ErrDamaged: the store holds a record for the key that idem cannot
	// decode (changed behind the store's back, or written by a newer idem).
	// Calls on the key fail alike until an admin DeleteKey removes it.
	ErrDamaged = errors.New("idem: stored record cannot be decoded")
)

// ErrNotInProgress: an operator asked to force-release a record that is not
// IN_PROGRESS.
var ErrNotInProgress = errors.New("idem: record is not in progress")
