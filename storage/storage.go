package storage

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/idemhq/idem"
)

// Sentinel errors returned by every backend, wrapped with %w. They are the
// values of package idem, so the server and the client agree on them.
var (
	ErrNotFound      = idem.ErrNotFound
	ErrLeaseLost     = idem.ErrLeaseLost
	ErrNotInProgress = idem.ErrNotInProgress
	ErrUnavailable   = idem.ErrUnavailable
	ErrClosed        = idem.ErrClosed
	ErrDamaged       = idem.ErrDamaged
)

// DamagedError is a record the store holds but cannot decode. errors.Is
// finds ErrDamaged in it. Its message names the key, for the tenant whose
// key it is; Err, the decoder's complaint, may name files or hosts and
// goes only to logs.
type DamagedError struct {
	ID  ID
	Err error
}

// Damaged wraps a decoding failure of id's record.
func Damaged(id ID, err error) error { return &DamagedError{ID: id, Err: err} }

// Public is the message for the caller: which record, and what to do.
func (e *DamagedError) Public() string {
	return fmt.Sprintf("%v: key %q in namespace %q; an admin DeleteKey removes it", ErrDamaged, e.ID.Key, e.ID.Namespace)
}

func (e *DamagedError) Error() string        { return e.Public() + ": " + fmt.Sprint(e.Err) }
func (e *DamagedError) Is(target error) bool { return target == ErrDamaged }
func (e *DamagedError) Unwrap() error        { return e.Err }

// ID identifies a record.
type ID struct {
	Tenant    string
	Namespace string
	Key       string
}

// State is a record's state.
type State uint8

const (
	StateInProgress State = 1
	StateCompleted  State = 2
	StateReleased   State = 3
)

func (s State) String() string {
	switch s {
	case StateInProgress:
		return "IN_PROGRESS"
	case StateCompleted:
		return "COMPLETED"
	case StateReleased:
		return "RELEASED"
	}
	return "UNKNOWN"
}

// Outcome is Reserve's answer.
type Outcome uint8

const (
	OutcomeReserved   Outcome = 1
	OutcomeCompleted  Outcome = 2
	OutcomeInProgress Outcome = 3
	OutcomeMismatch   Outcome = 4
)

func (o Outcome) String() string {
	switch o {
	case OutcomeReserved:
		return "RESERVED"
	case OutcomeCompleted:
		return "COMPLETED"
	case OutcomeInProgress:
		return "IN_PROGRESS"
	case OutcomeMismatch:
		return "MISMATCH"
	}
	return "UNKNOWN"
}

// Detail is one google.protobuf.Any of a stored result, kept as its parts so
// that storage does not depend on protobuf.
type Detail struct {
	TypeURL string
	Value   []byte
}

// Result is what a completed command produced.
type Result struct {
	Code     int32
	Message  string
	Body     []byte
	Details  []Detail
	Metadata map[string]string
}

// Equal reports whether two results are the same byte for byte. A nil
// result equals an empty one, since stores need not tell them apart.
func (r *Result) Equal(o *Result) bool {
	if r == nil {
		r = &Result{}
	}
	if o == nil {
		o = &Result{}
	}
	if r.Code != o.Code || r.Message != o.Message || !bytes.Equal(r.Body, o.Body) || len(r.Details) != len(o.Details) || len(r.Metadata) != len(o.Metadata) {
		return false
	}
	for i := range r.Details {
		if r.Details[i].TypeURL != o.Details[i].TypeURL || !bytes.Equal(r.Details[i].Value, o.Details[i].Value) {
			return false
		}
	}
	for k, v := range r.Metadata {
		if ov, ok := o.Metadata[k]; !ok || ov != v {
			return false
		}
	}
	return true
}

// Size is the number of bytes the result occupies, for the result size limit.
func (r *Result) Size() int {
	if r == nil {
		return 0
	}
	n := len(r.Message) + len(r.Body)
	for _, d := range r.Details {
		n += len(d.TypeURL) + len(d.Value)
	}
	for k, v := range r.Metadata {
		n += len(k) + len(v)
	}
	return n
}

// Clone returns a deep copy.
func (r *Result) Clone() *Result {
	if r == nil {
		return nil
	}
	c := &Result{Code: r.Code, Message: r.Message, Body: bytes.Clone(r.Body), Metadata: maps.Clone(r.Metadata)}
	if r.Details != nil {
		c.Details = make([]Detail, len(r.Details))
		for i, d := range r.Details {
			c.Details[i] = Detail{TypeURL: d.TypeURL, Value: bytes.Clone(d.Value)}
		}
	}
	return c
}

// Checkpoint is the last phase an attempt reported.
type Checkpoint struct {
	Phase string
	Data  []byte
}

// Record is one key's stored state. Zero times mean "not set".
type Record struct {
	ID
	Fingerprint    []byte
	State          State
	Token          uint64
	Result         *Result
	Checkpoint     *Checkpoint
	Attempts       uint32
	CreatedAt      time.Time
	LeaseExpiresAt time.Time
	CompletedAt    time.Time
	ExpiresAt      time.Time
}

// Clone returns a deep copy, so callers may keep a record a store handed out.
func (r *Record) Clone() *Record {
	if r == nil {
		return nil
	}
	c := *r
	c.Fingerprint = bytes.Clone(r.Fingerprint)
	c.Result = r.Result.Clone()
	if r.Checkpoint != nil {
		c.Checkpoint = &Checkpoint{Phase: r.Checkpoint.Phase, Data: bytes.Clone(r.Checkpoint.Data)}
	}
	return &c
}

// Live reports whether the record exists at now.
func (r *Record) Live(now time.Time) bool { return r != nil && r.ExpiresAt.After(now) }

// ReserveParams are the arguments of Reserve.
type ReserveParams struct {
	ID
	Fingerprint []byte
	LeaseTTL    time.Duration
	Retention   time.Duration
}

// CompleteParams are the arguments of Complete.
type CompleteParams struct {
	ID
	Token     uint64
	Result    *Result
	Retention time.Duration
}

// ReserveResult is one item of BatchReserve.
type ReserveResult struct {
	Outcome Outcome
	Record  *Record
	Err     error
}

// CompleteResult is one item of BatchComplete.
type CompleteResult struct {
	Record *Record
	Err    error
}

// ListParams select a page of records.
type ListParams struct {
	Tenant    string
	Namespace string
	KeyPrefix string
	// After is the last key of the previous page; empty starts at the beginning.
	After string
	// Limit is the page size (1–1000).
	Limit int
}

// StatsRow is the number of live records of one namespace in one state.
type StatsRow struct {
	Namespace string
	State     State
	Count     int64
}

// Store is a backend. Every method is safe for concurrent use and atomic per
// record. The rules are in the package documentation.
type Store interface {
	Reserve(ctx context.Context, p ReserveParams) (Outcome, *Record, error)
	Complete(ctx context.Context, p CompleteParams) (*Record, error)
	Release(ctx context.Context, id ID, token uint64) (*Record, error)
	ExtendLease(ctx context.Context, id ID, token uint64, ttl time.Duration) (*Record, error)
	Checkpoint(ctx context.Context, id ID, token uint64, cp Checkpoint) (*Record, error)
	Lookup(ctx context.Context, id ID) (*Record, error)
	BatchReserve(ctx context.Context, items []ReserveParams) ([]ReserveResult, error)
	BatchComplete(ctx context.Context, items []CompleteParams) ([]CompleteResult, error)

	Delete(ctx context.Context, id ID) (*Record, error)
	ForceRelease(ctx context.Context, id ID) (*Record, error)
	// List returns up to p.Limit records and whether more follow.
	List(ctx context.Context, p ListParams) (recs []*Record, more bool, err error)
	Stats(ctx context.Context, tenant, namespace string) ([]StatsRow, error)

	// Ping reports whether the store can serve requests, for health checks.
	Ping(ctx context.Context) error
	// Close releases the store's resources; later calls return ErrClosed.
	Close() error
}

// SortStats orders stats rows by namespace, then state, so every backend
// answers the same way.
func SortStats(rows []StatsRow) {
	slices.SortFunc(rows, func(a, b StatsRow) int {
		if a.Namespace != b.Namespace {
			if a.Namespace < b.Namespace {
				return -1
			}
			return 1
		}
		return int(a.State) - int(b.State)
	})
}
