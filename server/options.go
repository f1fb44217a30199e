package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/idemhq/idem/storage"
)

// Limits are the server-wide bounds every request is validated against.
// A zero field means the default of DefaultLimits.
type Limits struct {
	MaxKeyBytes         int
	MaxNamespaceBytes   int
	MaxTenantBytes      int
	MaxFingerprintBytes int
	MaxPhaseBytes       int
	// MaxResultBytes bounds a result (body, message, details and metadata,
	// as storage.Result.Size counts them, each detail and metadata entry
	// at least 8 bytes) and a checkpoint's data.
	MaxResultBytes int

	MinLease, DefaultLease, MaxLease             time.Duration
	MinRetention, DefaultRetention, MaxRetention time.Duration
	MaxWait                                      time.Duration
	MaxBatch                                     int
}

// DefaultLimits returns the limits of the design contract.
func DefaultLimits() Limits {
	return Limits{
		MaxKeyBytes:         256,
		MaxNamespaceBytes:   256,
		MaxTenantBytes:      128,
		MaxFingerprintBytes: 64,
		MaxPhaseBytes:       256,
		MaxResultBytes:      1 << 20,
		MinLease:            time.Second,
		DefaultLease:        30 * time.Second,
		MaxLease:            time.Hour,
		MinRetention:        time.Second,
		DefaultRetention:    24 * time.Hour,
		MaxRetention:        30 * 24 * time.Hour,
		MaxWait:             30 * time.Second,
		MaxBatch:            1000,
	}
}

// WithDefaults fills zero fields with the defaults and reports limits that
// contradict each other (a default outside its range, a negative size).
func (l Limits) WithDefaults() (Limits, error) {
	d := DefaultLimits()
	fillInt := func(p *int, def int) {
		if *p == 0 {
			*p = def
		}
	}
	fillDur := func(p *time.Duration, def time.Duration) {
		if *p == 0 {
			*p = def
		}
	}
	fillInt(&l.MaxKeyBytes, d.MaxKeyBytes)
	fillInt(&l.MaxNamespaceBytes, d.MaxNamespaceBytes)
	fillInt(&l.MaxTenantBytes, d.MaxTenantBytes)
	fillInt(&l.MaxFingerprintBytes, d.MaxFingerprintBytes)
	fillInt(&l.MaxPhaseBytes, d.MaxPhaseBytes)
	fillInt(&l.MaxResultBytes, d.MaxResultBytes)
	fillInt(&l.MaxBatch, d.MaxBatch)
	fillDur(&l.MinLease, d.MinLease)
	fillDur(&l.MaxLease, d.MaxLease)
	fillDur(&l.MinRetention, d.MinRetention)
	fillDur(&l.MaxRetention, d.MaxRetention)
	fillDur(&l.MaxWait, d.MaxWait)
	// Defaults are clamped into a range the caller narrowed, so setting
	// only MaxLease = 10s still gives a usable configuration.
	if l.DefaultLease == 0 {
		l.DefaultLease = min(max(d.DefaultLease, l.MinLease), l.MaxLease)
	}
	if l.DefaultRetention == 0 {
		l.DefaultRetention = min(max(d.DefaultRetention, l.MinRetention), l.MaxRetention)
	}
	var errs []error
	for _, c := range []struct {
		name string
		v    int
	}{{"MaxKeyBytes", l.MaxKeyBytes}, {"MaxNamespaceBytes", l.MaxNamespaceBytes}, {"MaxTenantBytes", l.MaxTenantBytes}, {"MaxFingerprintBytes", l.MaxFingerprintBytes}, {"MaxPhaseBytes", l.MaxPhaseBytes}, {"MaxResultBytes", l.MaxResultBytes}, {"MaxBatch", l.MaxBatch}} {
		if c.v < 0 {
			errs = append(errs, fmt.Errorf("idem: limit %s is negative (%d)", c.name, c.v))
		}
	}
	if l.MinLease < 0 || l.DefaultLease < l.MinLease || l.MaxLease < l.DefaultLease {
		errs = append(errs, fmt.Errorf("idem: lease limits need 0 < min ≤ default ≤ max, have %v ≤ %v ≤ %v", l.MinLease, l.DefaultLease, l.MaxLease))
	}
	if l.MinRetention < 0 || l.DefaultRetention < l.MinRetention || l.MaxRetention < l.DefaultRetention {
		errs = append(errs, fmt.Errorf("idem: retention limits need 0 < min ≤ default ≤ max, have %v ≤ %v ≤ %v", l.MinRetention, l.DefaultRetention, l.MaxRetention))
	}
	if l.MaxWait < 0 {
		errs = append(errs, fmt.Errorf("idem: limit MaxWait is negative (%v)", l.MaxWait))
	}
	for _, c := range []struct {
		name string
		v    time.Duration
	}{{"MaxLease", l.MaxLease}, {"MaxRetention", l.MaxRetention}, {"MaxWait", l.MaxWait}} {
		if c.v > MaxDuration {
			errs = append(errs, fmt.Errorf("idem: limit %s %v is beyond %v, the longest a record's times can run", c.name, c.v, MaxDuration))
		}
	}
	return l, errors.Join(errs...)
}

// MaxDuration bounds every lease, retention and wait limit: stores keep a
// record's times as nanoseconds since 1970 in 64 bits, which end in 2262,
// and an expiry past that would wrap into the past and read as expired at
// once.
const MaxDuration = 100 * 365 * 24 * time.Hour

// Policy is what a namespace may ask for. The server's Limits stay hard
// bounds: a policy can narrow them, never widen them. A zero duration or
// size means the server's limit.
type Policy struct {
	DefaultLease     time.Duration
	MaxLease         time.Duration
	DefaultRetention time.Duration
	MaxRetention     time.Duration
	MaxResultSize    int
	// StoreResults false keeps only the result's code: replays learn that
	// the command ran and how it ended, not its response (for namespaces
	// whose responses are large or sensitive). Its zero value is false, so
	// start from Limits.DefaultPolicy, whose StoreResults is true, and
	// narrow it, rather than from Policy{}; policy files and
	// --namespace-policy default it to true.
	StoreResults bool
}

// DefaultPolicy is the policy that applies the limits unchanged and stores results.
func (l Limits) DefaultPolicy() Policy {
	return Policy{
		DefaultLease:     l.DefaultLease,
		MaxLease:         l.MaxLease,
		DefaultRetention: l.DefaultRetention,
		MaxRetention:     l.MaxRetention,
		MaxResultSize:    l.MaxResultBytes,
		StoreResults:     true,
	}
}

// normalize fills a policy's zero fields from the limits and keeps it inside them.
func (p Policy) normalize(l Limits) Policy {
	clamp := func(v, lo, hi, def time.Duration) time.Duration {
		if v == 0 {
			return def
		}
		return min(max(v, lo), hi)
	}
	p.MaxLease = clamp(p.MaxLease, l.MinLease, l.MaxLease, l.MaxLease)
	p.DefaultLease = clamp(p.DefaultLease, l.MinLease, p.MaxLease, min(l.DefaultLease, p.MaxLease))
	p.MaxRetention = clamp(p.MaxRetention, l.MinRetention, l.MaxRetention, l.MaxRetention)
	p.DefaultRetention = clamp(p.DefaultRetention, l.MinRetention, p.MaxRetention, min(l.DefaultRetention, p.MaxRetention))
	if p.MaxResultSize <= 0 || p.MaxResultSize > l.MaxResultBytes {
		p.MaxResultSize = l.MaxResultBytes
	}
	return p
}

// PolicyResolver picks the store and the policy of a namespace. It is called
// on every request, so it must be cheap and safe for concurrent use.
type PolicyResolver interface {
	Resolve(tenant, namespace string) (storage.Store, Policy)
}

// StaticResolver routes every namespace to one store, with per-namespace
// policies and a fallback.
type StaticResolver struct {
	Store storage.Store
	// Default applies to namespaces missing from Namespaces.
	Default    Policy
	Namespaces map[string]Policy
}

// Resolve implements PolicyResolver.
func (r *StaticResolver) Resolve(_, namespace string) (storage.Store, Policy) {
	if p, ok := r.Namespaces[namespace]; ok {
		return r.Store, p
	}
	return r.Store, r.Default
}

// TenantFunc turns the tenant a request names into the tenant it acts for,
// or refuses it (wrap idem.ErrPermissionDenied or idem.ErrUnauthenticated).
// Authentication replaces the default, which uses the requested tenant and
// "default" for an empty one.
type TenantFunc func(ctx context.Context, requested string) (string, error)

// DefaultTenant is the tenant of requests that name none without authentication.
const DefaultTenant = "default"

func defaultTenantFunc(_ context.Context, requested string) (string, error) {
	if requested == "" {
		return DefaultTenant, nil
	}
	return requested, nil
}

type options struct {
	logger         *slog.Logger
	limits         Limits
	resolver       PolicyResolver
	policies       map[string]Policy
	clock          clockwork.Clock
	healthClock    clockwork.Clock
	tenant         TenantFunc
	healthInterval time.Duration
	healthTimeout  time.Duration
	maxWaiters     int
	retryDelay     time.Duration
	pollMin        time.Duration
	pollMax        time.Duration
	storeTimeout   time.Duration
}

func defaultOptions() options {
	return options{
		logger:         slog.Default(),
		limits:         DefaultLimits(),
		clock:          clockwork.NewRealClock(),
		healthClock:    clockwork.NewRealClock(),
		tenant:         defaultTenantFunc,
		healthInterval: 5 * time.Second,
		healthTimeout:  2 * time.Second,
		maxWaiters:     10000,
		retryDelay:     time.Second,
		pollMin:        10 * time.Millisecond,
		pollMax:        250 * time.Millisecond,
		storeTimeout:   DefaultStoreTimeout,
	}
}

// Option configures a Service.
type Option func(*options)

// WithLogger sets the logger for internal errors and health changes.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// WithLimits replaces the server-wide limits; zero fields keep their default.
func WithLimits(l Limits) Option { return func(o *options) { o.limits = l } }

// WithNamespacePolicies sets per-namespace policies on the store given to
// New; other namespaces get the limits' DefaultPolicy. Ignored when
// WithPolicyResolver is given.
func WithNamespacePolicies(p map[string]Policy) Option {
	return func(o *options) { o.policies = p }
}

// WithPolicyResolver routes namespaces to stores and policies. The store
// given to New remains the one the health checker pings.
func WithPolicyResolver(r PolicyResolver) Option { return func(o *options) { o.resolver = r } }

// WithClock sets the clock of the wait for in-progress keys (its deadline
// and its polling). Tests pass the fake clock that drives the store.
func WithClock(c clockwork.Clock) Option {
	return func(o *options) {
		if c != nil {
			o.clock = c
		}
	}
}

// WithHealthClock sets the clock of the health checker's interval (the
// real clock by default, so a fake clock shared with the store sees no
// extra timer).
func WithHealthClock(c clockwork.Clock) Option {
	return func(o *options) {
		if c != nil {
			o.healthClock = c
		}
	}
}

// WithTenantFunc sets how a request's tenant is resolved (authentication).
func WithTenantFunc(f TenantFunc) Option {
	return func(o *options) {
		if f != nil {
			o.tenant = f
		}
	}
}

// WithHealthCheck sets how often the store is pinged for the health service
// and how long one ping may take.
func WithHealthCheck(interval, timeout time.Duration) Option {
	return func(o *options) {
		if interval > 0 {
			o.healthInterval = interval
		}
		if timeout > 0 {
			o.healthTimeout = timeout
		}
	}
}

// WithMaxWaiters bounds how many Reserve calls may wait at once; beyond it
// a Reserve answers IN_PROGRESS at once instead of waiting.
func WithMaxWaiters(n int) Option { return func(o *options) { o.maxWaiters = n } }

// WithRetryDelay sets the RetryInfo delay sent with UNAVAILABLE and RESOURCE_EXHAUSTED.
func WithRetryDelay(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.retryDelay = d
		}
	}
}

// WithWaitPolling sets the backoff bounds of the poll that finds records
// completed by other replicas while a Reserve waits.
func WithWaitPolling(minInterval, maxInterval time.Duration) Option {
	return func(o *options) {
		if minInterval > 0 {
			o.pollMin = minInterval
		}
		if maxInterval >= o.pollMin {
			o.pollMax = maxInterval
		}
		// A minimum above the old maximum, given alone, raises it: the
		// backoff would otherwise shrink to the old maximum after one poll.
		o.pollMax = max(o.pollMax, o.pollMin)
	}
}

// WithStoreTimeout bounds each store operation a call makes (default
// DefaultStoreTimeout; 0 turns the bound off). A Reserve that waits makes
// several, each bounded, while the wait itself stays bounded by its wait
// and deadline. The bound is for callers without a deadline of their own
// facing a store that stopped answering: the operation it ends answers
// UNAVAILABLE with RetryInfo, naming the bound (as idemd's --store-timeout).
// A caller's deadline or cancellation that comes first answers
// DEADLINE_EXCEEDED or CANCELED as without it. Stats, whose count takes
// longer the more records there are, is bounded only for callers without
// a deadline.
func WithStoreTimeout(d time.Duration) Option { return func(o *options) { o.storeTimeout = d } }
