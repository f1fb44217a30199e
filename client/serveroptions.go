package client

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// InterceptorOption configures UnaryServerInterceptor and StreamServerInterceptor.
type InterceptorOption func(*serverOptions)

type serverOptions struct {
	selector       func(ctx context.Context, fullMethod string) bool
	keyOptional    func(fullMethod string) bool
	failOpen       func(fullMethod string) bool
	exclude        map[protoreflect.FullName]bool
	excludeMsgs    map[protoreflect.FullName]bool
	tenant         string
	leaseMin       time.Duration
	leaseMax       time.Duration
	leaseDefault   time.Duration
	heartbeat      bool
	retention      time.Duration
	wait           time.Duration
	transient      map[codes.Code]bool
	maxResult      int
	maxStreamMsgs  int
	logger         *slog.Logger
	hooks          []func(context.Context, Event)
	clock          clockwork.Clock
	cleanupTimeout time.Duration
	streamKey      func(msg any) (string, bool)
}

// DefaultTransientCodes are the codes after which the interceptor releases
// the key instead of storing the result: the next retry runs the handler again.
var DefaultTransientCodes = []codes.Code{
	codes.Unavailable, codes.Aborted, codes.DeadlineExceeded, codes.ResourceExhausted,
	codes.Internal, codes.Unknown, codes.Canceled,
}

func defaultServerOptions() serverOptions {
	o := serverOptions{
		selector:       func(context.Context, string) bool { return true },
		keyOptional:    func(string) bool { return false },
		failOpen:       func(string) bool { return false },
		leaseMin:       time.Second,
		leaseMax:       5 * time.Minute,
		leaseDefault:   30 * time.Second,
		heartbeat:      true,
		wait:           2 * time.Second,
		transient:      map[codes.Code]bool{},
		maxResult:      1 << 20,
		maxStreamMsgs:  1000,
		logger:         slog.Default(),
		clock:          clockwork.NewRealClock(),
		cleanupTimeout: 5 * time.Second,
	}
	for _, c := range DefaultTransientCodes {
		o.transient[c] = true
	}
	return o
}

// evaluateServerOptions copies the defaults before applying opts, so
// interceptors built from the same options never share mutable state.
func evaluateServerOptions(opts []InterceptorOption) *serverOptions {
	o := defaultServerOptions()
	for _, opt := range opts {
		opt(&o)
	}
	return &o
}

// WithSelector limits the interceptor to the methods for which f returns
// true; the others pass through untouched. Methods whose proto declares
// idempotency_level NO_SIDE_EFFECTS or IDEMPOTENT always pass through.
func WithSelector(f func(ctx context.Context, fullMethod string) bool) InterceptorOption {
	return func(o *serverOptions) { o.selector = f }
}

// WithKeyOptional makes the key optional for the methods for which f
// returns true: calls without one run the handler without deduplication
// instead of failing with INVALID_ARGUMENT.
func WithKeyOptional(f func(fullMethod string) bool) InterceptorOption {
	return func(o *serverOptions) { o.keyOptional = f }
}

// WithFailOpen runs the handler without deduplication, for the methods for
// which f returns true, when idem cannot be reached (UNAVAILABLE, a
// deadline) or sheds load (RESOURCE_EXHAUSTED). The default is to fail
// closed with UNAVAILABLE. Any other refusal from idem, such as a
// credential it does not accept, fails closed on every method, so a
// misconfiguration cannot turn deduplication off unnoticed.
func WithFailOpen(f func(fullMethod string) bool) InterceptorOption {
	return func(o *serverOptions) { o.failOpen = f }
}

// WithFingerprintExclude leaves fields out of the request fingerprint, named
// by their full name ("payments.v1.ChargeRequest.sent_at"), wherever that
// message occurs in the request. Use it for fields that legitimately differ
// between retries of one command, such as a client timestamp.
func WithFingerprintExclude(fields ...protoreflect.FullName) InterceptorOption {
	return func(o *serverOptions) {
		if o.exclude == nil {
			o.exclude, o.excludeMsgs = map[protoreflect.FullName]bool{}, map[protoreflect.FullName]bool{}
		}
		for _, f := range fields {
			o.exclude[f] = true
			o.excludeMsgs[f.Parent()] = true
		}
	}
}

// WithTenantName sets the tenant of every record (empty: the Service's
// default, or the tenant of its credentials).
func WithTenantName(tenant string) InterceptorOption {
	return func(o *serverOptions) { o.tenant = tenant }
}

// WithLease bounds the lease: the time left until the call's deadline plus
// a second for Complete, clamped to [minLease, maxLease]; def when the call
// has no deadline. A lease idem refuses (outside its limits, 1s–1h by
// default, or above a namespace's max_lease) is replaced by the
// namespace's default lease for the method from then on, which is logged.
func WithLease(minLease, maxLease, def time.Duration) InterceptorOption {
	return func(o *serverOptions) { o.leaseMin, o.leaseMax, o.leaseDefault = minLease, maxLease, def }
}

// WithoutHeartbeat stops the interceptor from extending the lease of long
// handlers; a handler that outlives its lease may then be taken over. The
// heartbeat extends every half lease, each ExtendLease bounded to that
// interval so one hung call cannot let the lease lapse.
func WithoutHeartbeat() InterceptorOption {
	return func(o *serverOptions) { o.heartbeat = false }
}

// WithRetention sets how long results are kept (0: the server's default).
func WithRetention(d time.Duration) InterceptorOption {
	return func(o *serverOptions) { o.retention = d }
}

// WithWait sets how long a duplicate of an in-flight call waits for it to
// finish before it is answered ABORTED with RetryInfo (default 2s, never
// past the call's deadline).
func WithWait(d time.Duration) InterceptorOption {
	return func(o *serverOptions) { o.wait = d }
}

// WithTransientCodes replaces the codes after which the key is released
// rather than the result stored (default DefaultTransientCodes).
func WithTransientCodes(cs ...codes.Code) InterceptorOption {
	return func(o *serverOptions) {
		o.transient = map[codes.Code]bool{}
		for _, c := range cs {
			o.transient[c] = true
		}
	}
}

// WithMaxResultSize sets the largest result stored (default 1 MiB, idem's
// own default limit). Larger responses are returned but not cached.
func WithMaxResultSize(n int) InterceptorOption {
	return func(o *serverOptions) { o.maxResult = n }
}

// WithMaxStreamMessages sets how many messages of a server-streaming call
// are recorded (default 1000). Longer streams are not cached.
func WithMaxStreamMessages(n int) InterceptorOption {
	return func(o *serverOptions) { o.maxStreamMsgs = n }
}

// WithLogger sets the logger for failures the caller does not see.
func WithLogger(l *slog.Logger) InterceptorOption {
	return func(o *serverOptions) { o.logger = l }
}

// WithEventHook calls f for every Event, e.g. to count them in Prometheus.
func WithEventHook(f func(context.Context, Event)) InterceptorOption {
	return func(o *serverOptions) { o.hooks = append(o.hooks, f) }
}

// WithCounters counts events into c.
func WithCounters(c *Counters) InterceptorOption {
	return WithEventHook(c.observe)
}

// WithHeartbeatClock sets the clock of the lease heartbeat (tests).
func WithHeartbeatClock(c clockwork.Clock) InterceptorOption {
	return func(o *serverOptions) { o.clock = c }
}

// WithCleanupTimeout bounds the Complete or Release after the handler
// returned; it runs even when the call was cancelled. Default 5s.
func WithCleanupTimeout(d time.Duration) InterceptorOption {
	return func(o *serverOptions) { o.cleanupTimeout = d }
}

// WithStreamMessageKey deduplicates client- and bidi-streaming calls per
// message: f returns a message's idempotency key, or false to let it
// through unchecked. A message counts as processed when the handler asks for
// the next one or returns without error. While a message is processed,
// ss.Context() carries its token (TokenFromContext); it is the stream's
// context, which ends with the stream, or when a message's lease was lost
// to another attempt (cause ErrLeaseLost). Without this option such
// streams pass through.
func WithStreamMessageKey(f func(msg any) (string, bool)) InterceptorOption {
	return func(o *serverOptions) { o.streamKey = f }
}

// EventKind names something the interceptor did that the caller did not see.
type EventKind int

const (
	// EventCompleteFailed: Complete failed after the handler ran; the caller
	// got the handler's answer but a retry may run the handler again (or,
	// with Err ErrLeaseLost, another attempt took over and its result stands).
	EventCompleteFailed EventKind = iota + 1
	// EventReleaseFailed: Release failed; the key frees itself when its lease ends.
	EventReleaseFailed
	// EventResultTooLarge: the result exceeded the size limit and was not cached.
	EventResultTooLarge
	// EventHeartbeatFailed: ExtendLease failed.
	EventHeartbeatFailed
	// EventFailOpen: idem was unreachable and the handler ran without deduplication.
	EventFailOpen
	// EventReplayed: a stored result was replayed (or a duplicate stream message skipped).
	EventReplayed
)

func (k EventKind) String() string {
	switch k {
	case EventCompleteFailed:
		return "complete_failed"
	case EventReleaseFailed:
		return "release_failed"
	case EventResultTooLarge:
		return "result_too_large"
	case EventHeartbeatFailed:
		return "heartbeat_failed"
	case EventFailOpen:
		return "fail_open"
	case EventReplayed:
		return "replayed"
	}
	return "unknown"
}

// Event is reported to WithEventHook.
type Event struct {
	Kind   EventKind
	Method string
	Key    string
	Err    error
}

// Counters counts events; pass it with WithCounters.
type Counters struct {
	CompleteFailed  atomic.Int64
	ReleaseFailed   atomic.Int64
	ResultTooLarge  atomic.Int64
	HeartbeatFailed atomic.Int64
	FailOpen        atomic.Int64
	Replayed        atomic.Int64
}

func (c *Counters) observe(_ context.Context, e Event) {
	switch e.Kind {
	case EventCompleteFailed:
		c.CompleteFailed.Add(1)
	case EventReleaseFailed:
		c.ReleaseFailed.Add(1)
	case EventResultTooLarge:
		c.ResultTooLarge.Add(1)
	case EventHeartbeatFailed:
		c.HeartbeatFailed.Add(1)
	case EventFailOpen:
		c.FailOpen.Add(1)
	case EventReplayed:
		c.Replayed.Add(1)
	}
}

func (o *serverOptions) report(ctx context.Context, e Event) {
	for _, h := range o.hooks {
		h(ctx, e)
	}
}
