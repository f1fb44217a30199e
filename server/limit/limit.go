package limit

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/jonboulle/clockwork"
	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/idemhq/idem"
	"github.com/idemhq/idem/server/auth"
	"github.com/idemhq/idem/server/observe"
)

// Config sets the limits. Zero values turn a limit off.
type Config struct {
	// MaxInflight bounds the calls served at once by this idemd (--max-inflight).
	MaxInflight int
	// TenantRate is each tenant's sustained calls per second (--tenant-rate).
	TenantRate float64
	// TenantBurst is how many calls a tenant may make at once above its
	// rate (--tenant-burst); 0 means max(1, TenantRate).
	TenantBurst int
	// TenantMaxInflight bounds the calls one tenant has in flight at once
	// (--tenant-max-inflight), so that one tenant's waiting Reserves or slow
	// store cannot take every slot of MaxInflight.
	TenantMaxInflight int
	// MaxTenants bounds the per-tenant buckets kept; default 10,000.
	MaxTenants int
	// RetryAfter is the RetryInfo delay of an in-flight refusal; default 50 ms.
	RetryAfter time.Duration
}

// DefaultConfig bounds in-flight calls and leaves tenants unlimited.
func DefaultConfig() Config {
	return Config{MaxInflight: 2000, MaxTenants: 10000, RetryAfter: 50 * time.Millisecond}
}

// Validate names each value New cannot honour: a negative bound or rate
// (0 is the way to say unlimited), or a rate that is not a number.
func (c Config) Validate() error {
	var errs []error
	if c.MaxInflight < 0 {
		errs = append(errs, fmt.Errorf("idem: --max-inflight %d is negative (0: unbounded)", c.MaxInflight))
	}
	if math.IsNaN(c.TenantRate) || math.IsInf(c.TenantRate, 0) || c.TenantRate < 0 {
		errs = append(errs, fmt.Errorf("idem: --tenant-rate %v is not a rate (calls per second; 0: unlimited)", c.TenantRate))
	}
	if c.TenantBurst < 0 {
		errs = append(errs, fmt.Errorf("idem: --tenant-burst %d is negative (0: the rate, at least 1)", c.TenantBurst))
	} else if c.TenantBurst > 0 && c.TenantRate == 0 {
		errs = append(errs, fmt.Errorf("idem: --tenant-burst %d needs --tenant-rate: without a rate no tenant is limited", c.TenantBurst))
	}
	if c.TenantMaxInflight < 0 {
		errs = append(errs, fmt.Errorf("idem: --tenant-max-inflight %d is negative (0: unbounded)", c.TenantMaxInflight))
	}
	if c.MaxTenants < 0 {
		errs = append(errs, fmt.Errorf("idem: --max-tenants %d is negative", c.MaxTenants))
	}
	return errors.Join(errs...)
}

// RegisterFlags binds c's fields to flags of fs, c's values as defaults.
// idemd reads each also from IDEM_<FLAG>.
func RegisterFlags(fs *flag.FlagSet, c *Config) {
	fs.IntVar(&c.MaxInflight, "max-inflight", c.MaxInflight, "calls served at once by this replica; more are refused with RESOURCE_EXHAUSTED (0: unbounded)")
	fs.Float64Var(&c.TenantRate, "tenant-rate", c.TenantRate, "calls per second each tenant may make to this replica (0: unlimited)")
	fs.IntVar(&c.TenantBurst, "tenant-burst", c.TenantBurst, "calls a tenant may make at once above its rate (0: the rate, at least 1)")
	fs.IntVar(&c.TenantMaxInflight, "tenant-max-inflight", c.TenantMaxInflight, "calls one tenant may have in flight on this replica at once; more are refused with RESOURCE_EXHAUSTED (0: unbounded)")
	fs.IntVar(&c.MaxTenants, "max-tenants", c.MaxTenants, "per-tenant rate buckets kept; the least recently active are dropped")
}

// Option configures a Limiter.
type Option func(*Limiter)

// WithClock sets the clock of the token buckets.
func WithClock(c clockwork.Clock) Option { return func(l *Limiter) { l.clock = c } }

// WithMetrics reports idem_inflight_calls and idem_rejected_total.
func WithMetrics(m *observe.Metrics) Option { return func(l *Limiter) { l.metrics = m } }

// WithTenantFunc overrides how a call's tenant is found for the rate
// limit; the default is the authenticated identity's tenant, else the
// request's tenant field, else "default" for a request that has one. An
// empty tenant (a stream without identity, such as server reflection)
// acts for no tenant: only MaxInflight applies to it.
func WithTenantFunc(f func(ctx context.Context, req any) string) Option {
	return func(l *Limiter) { l.tenantOf = f }
}

// Limiter enforces a Config; its interceptors share one in-flight count.
type Limiter struct {
	cfg      Config
	clock    clockwork.Clock
	metrics  *observe.Metrics
	tenantOf func(context.Context, any) string

	inflight atomic.Int64
	gauge    interface {
		Inc()
		Dec()
	}
	errInflight error // built once: refusing must not allocate under overload
	releaseFn   func()
	noop        func()

	mu      sync.Mutex
	buckets *simplelru.LRU[string, *rate.Limiter]

	// Calls in flight per tenant, with TenantMaxInflight; a tenant leaves
	// the map when its last call ends, so it holds at most one entry per
	// call in flight.
	tmu          sync.Mutex
	tenantCalls  map[string]int
	errTenantFly error
}

// New returns a Limiter for cfg.
func New(cfg Config, opts ...Option) *Limiter {
	d := DefaultConfig()
	if cfg.MaxTenants <= 0 {
		cfg.MaxTenants = d.MaxTenants
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = d.RetryAfter
	}
	if cfg.TenantBurst <= 0 {
		// Capped: converting a float above MaxInt to int gives a negative
		// burst, which refuses every call.
		cfg.TenantBurst = int(min(math.Max(1, math.Ceil(cfg.TenantRate)), math.MaxInt32))
	}
	l := &Limiter{cfg: cfg, clock: clockwork.NewRealClock(), tenantOf: defaultTenant}
	for _, o := range opts {
		o(l)
	}
	if g := l.metrics.Inflight(); g != nil {
		l.gauge = g
	}
	l.releaseFn, l.noop = l.release, func() {}
	l.buckets, _ = simplelru.NewLRU[string, *rate.Limiter](cfg.MaxTenants, nil)
	l.errInflight = exhausted("idem: too many calls in flight; retry later", "inflight", cfg.RetryAfter)
	l.tenantCalls = map[string]int{}
	l.errTenantFly = exhausted("idem: this tenant has too many calls in flight; retry later", "tenant_inflight", cfg.RetryAfter)
	return l
}

type tenanted interface{ GetTenant() string }

func defaultTenant(ctx context.Context, req any) string {
	if id, ok := auth.FromContext(ctx); ok {
		return id.Tenant
	}
	r, ok := req.(tenanted)
	if !ok {
		return ""
	}
	if r.GetTenant() != "" {
		return r.GetTenant()
	}
	return "default"
}

func exhausted(msg, limit string, retry time.Duration) error {
	st, err := status.New(codes.ResourceExhausted, msg).WithDetails([]protoadapt.MessageV1{
		&errdetails.ErrorInfo{Reason: "RESOURCE_EXHAUSTED", Domain: idem.ErrorDomain, Metadata: map[string]string{"limit": limit}},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(retry)},
	}...)
	if err != nil {
		return status.Error(codes.ResourceExhausted, msg)
	}
	return st.Err()
}

// acquire takes an in-flight slot; the caller must call release after a nil error.
func (l *Limiter) acquire() error {
	// Counted even without a bound, for idem_inflight_calls.
	if n := l.inflight.Add(1); l.cfg.MaxInflight > 0 && n > int64(l.cfg.MaxInflight) {
		l.inflight.Add(-1)
		l.metrics.Rejected(observe.RejectInflight)
		return l.errInflight
	}
	if l.gauge != nil {
		l.gauge.Inc()
	}
	return nil
}

func (l *Limiter) release() {
	l.inflight.Add(-1)
	if l.gauge != nil {
		l.gauge.Dec()
	}
}

// maxBucketKey bounds the tenant names the buckets keep.
const maxBucketKey = 128

// tenantKey is the name a tenant's bucket and count are kept under. The
// name is not validated yet and may be as long as a request; a long one
// is kept as its digest, which still gives it an entry of its own. The
// NUL keeps digests apart from printable names.
func tenantKey(tenant string) string {
	if len(tenant) > maxBucketKey {
		sum := sha256.Sum256([]byte(tenant))
		return "\x00" + string(sum[:])
	}
	return tenant
}

// enter counts a call of tenant in flight, or refuses it past
// TenantMaxInflight; the caller must call leave after a nil error.
func (l *Limiter) enter(tenant string) error {
	l.tmu.Lock()
	defer l.tmu.Unlock()
	if l.tenantCalls[tenant] >= l.cfg.TenantMaxInflight {
		l.metrics.Rejected(observe.RejectTenantInflight)
		return l.errTenantFly
	}
	l.tenantCalls[tenant]++
	return nil
}

func (l *Limiter) leave(tenant string) {
	l.tmu.Lock()
	defer l.tmu.Unlock()
	if n := l.tenantCalls[tenant] - 1; n > 0 {
		l.tenantCalls[tenant] = n
	} else {
		delete(l.tenantCalls, tenant)
	}
}

// allow takes one token from tenant's bucket, or says how long until one is due.
func (l *Limiter) allow(tenant string) error {
	if l.cfg.TenantRate <= 0 {
		return nil
	}
	l.mu.Lock()
	// Read under the lock: a time older than the bucket's last moves its
	// clock back, and the time between is credited twice.
	now := l.clock.Now()
	b, ok := l.buckets.Get(tenant)
	if !ok {
		b = rate.NewLimiter(rate.Limit(l.cfg.TenantRate), l.cfg.TenantBurst)
		l.buckets.Add(tenant, b)
	}
	r := b.ReserveN(now, 1)
	delay := r.DelayFrom(now)
	if delay > 0 {
		r.CancelAt(now)
	}
	l.mu.Unlock()
	if delay == 0 {
		return nil
	}
	l.metrics.Rejected(observe.RejectRate)
	return exhausted("idem: tenant rate limit exceeded; retry later", "tenant_rate", delay)
}

// tenants is the number of buckets kept, for tests.
func (l *Limiter) tenants() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buckets.Len()
}

const healthPrefix = "/grpc.health.v1.Health/"

// Admit applies both limits to a call of method; on nil the caller must
// call done when the call ends.
func (l *Limiter) Admit(ctx context.Context, method string, req any) (done func(), err error) {
	if strings.HasPrefix(method, healthPrefix) {
		return l.noop, nil
	}
	if err := l.acquire(); err != nil {
		return nil, err
	}
	if l.cfg.TenantRate <= 0 && l.cfg.TenantMaxInflight <= 0 {
		return l.releaseFn, nil
	}
	t := l.tenantOf(ctx, req)
	if t == "" {
		return l.releaseFn, nil
	}
	tenant := tenantKey(t)
	if l.cfg.TenantMaxInflight <= 0 {
		if err := l.allow(tenant); err != nil {
			l.release()
			return nil, err
		}
		return l.releaseFn, nil
	}
	// The in-flight bound first: a call it refuses does no work and must
	// not spend a token of the tenant's rate (its client retries soon).
	if err := l.enter(tenant); err != nil {
		l.release()
		return nil, err
	}
	if err := l.allow(tenant); err != nil {
		l.leave(tenant)
		l.release()
		return nil, err
	}
	return func() {
		l.leave(tenant)
		l.release()
	}, nil
}

// tenantsInFlight is the number of tenants with calls in flight, for tests.
func (l *Limiter) tenantsInFlight() int {
	l.tmu.Lock()
	defer l.tmu.Unlock()
	return len(l.tenantCalls)
}

// UnaryServerInterceptor limits unary calls. Place it after the auth
// interceptor, so the rate limit counts the authenticated tenant.
func (l *Limiter) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		done, err := l.Admit(ctx, info.FullMethod, req)
		if err != nil {
			return nil, err
		}
		defer done()
		return handler(ctx, req)
	}
}

// StreamServerInterceptor limits streaming calls; a stream holds its
// in-flight slot until it ends.
func (l *Limiter) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		done, err := l.Admit(ss.Context(), info.FullMethod, nil)
		if err != nil {
			return err
		}
		defer done()
		return handler(srv, ss)
	}
}
