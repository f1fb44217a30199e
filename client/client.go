package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/jonboulle/clockwork"
	"github.com/sony/gobreaker/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/idemhq/idem/internal/codec"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// Client talks to an idemd server. It is safe for concurrent use.
type Client struct {
	conn  *grpc.ClientConn
	rpc   idemv1.IdempotencyServiceClient
	opts  clientOptions
	cache *lru.Cache[cacheKey, cacheEntry]
	// cacheBytes is the size of the cached answers, kept by the cache's
	// eviction callback; cacheMu makes remember's replace-then-add one
	// step, so that two callers remembering one key cannot count it twice.
	cacheBytes atomic.Int64
	cacheMu    sync.Mutex
}

var _ Service = (*Client)(nil)

// Option configures New.
type Option func(*clientOptions)

type clientOptions struct {
	creds         credentials.TransportCredentials
	plaintext     bool
	bearer        string
	dialOpts      []grpc.DialOption
	tenant        string
	namespace     string
	retryMax      uint
	retryBase     time.Duration
	retryMaxDelay time.Duration
	breakerOn     bool
	breaker       gobreaker.Settings
	cacheSize     int
	cacheBytes    int64
	clock         clockwork.Clock
	maxRequest    int // WithMaxRequestBytes; 0: DefaultMaxRequestBytes
}

func defaultClientOptions() clientOptions {
	return clientOptions{
		retryMax:      5,
		retryBase:     50 * time.Millisecond,
		retryMaxDelay: 2 * time.Second,
		breakerOn:     true,
		cacheBytes:    DefaultCacheBytes,
		breaker: gobreaker.Settings{
			Name:    "idem",
			Timeout: 5 * time.Second,
			ReadyToTrip: func(c gobreaker.Counts) bool {
				return c.ConsecutiveFailures >= 5
			},
		},
		clock: clockwork.NewRealClock(),
	}
}

// WithTransportCredentials sets the connection's transport credentials.
// Without it (or WithTLSConfig, or WithInsecure) the client uses TLS with the
// system's roots.
func WithTransportCredentials(c credentials.TransportCredentials) Option {
	return func(o *clientOptions) { o.creds = c; o.plaintext = false }
}

// WithTLSConfig uses TLS with cfg.
func WithTLSConfig(cfg *tls.Config) Option {
	return WithTransportCredentials(credentials.NewTLS(cfg))
}

// WithInsecure uses a plaintext connection (loopback, tests, a mesh that
// encrypts for you). A bearer token is then sent in the clear.
func WithInsecure() Option {
	return func(o *clientOptions) { o.creds = insecure.NewCredentials(); o.plaintext = true }
}

// WithBearerToken sends "authorization: Bearer token" with every call.
// gRPC refuses to send it over a plaintext connection unless WithInsecure
// was chosen explicitly.
func WithBearerToken(token string) Option {
	return func(o *clientOptions) { o.bearer = token }
}

// WithDialOptions adds options to grpc.NewClient, e.g. a context dialer.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *clientOptions) { o.dialOpts = append(o.dialOpts, opts...) }
}

// WithTenant fills requests whose tenant is empty.
func WithTenant(tenant string) Option {
	return func(o *clientOptions) { o.tenant = tenant }
}

// WithNamespace fills requests whose namespace is empty.
func WithNamespace(ns string) Option {
	return func(o *clientOptions) { o.namespace = ns }
}

// WithRetry sets how often a call failing with UNAVAILABLE or with idemd's
// RESOURCE_EXHAUSTED (one carrying a RetryInfo; gRPC's own refusal of an
// oversized message is not retried) is retried (max attempts in total, 1
// disables retries)
// and the exponential backoff: base·2^(n-1) with ±20% jitter, at most
// maxDelay, and never shorter than the server's RetryInfo delay (spread up
// to 20% above it, so that callers idemd shed together do not all return in
// the same instant). A pause that would end after the call's deadline is
// not taken: the call fails at once with idem's error.
func WithRetry(maxAttempts uint, base, maxDelay time.Duration) Option {
	return func(o *clientOptions) { o.retryMax, o.retryBase, o.retryMaxDelay = maxAttempts, base, maxDelay }
}

// WithBreaker replaces the circuit breaker's settings. IsSuccessful and
// IsExcluded are set by the client: only UNAVAILABLE and idem-side
// deadlines count as failures, and calls the caller cancelled do not count.
// The breaker guards Reserve, BatchReserve and Lookup; calls on a
// reservation already held (Complete, Release, ExtendLease, Checkpoint,
// BatchComplete) are always sent.
func WithBreaker(s gobreaker.Settings) Option {
	return func(o *clientOptions) { o.breakerOn = true; o.breaker = s }
}

// WithoutBreaker turns the circuit breaker off.
func WithoutBreaker() Option {
	return func(o *clientOptions) { o.breakerOn = false }
}

// WithCache keeps up to size COMPLETED records in memory and answers a
// Reserve of the same tenant, namespace, key and fingerprint from it until
// the record's expires_at (by this process's clock). Completed records are
// immutable until they expire, so the only staleness is an operator deleting
// one early.
//
// The cache also holds at most WithCacheBytes of answers (64 MiB by
// default), evicting the least recently used; a record larger than that
// is not cached.
func WithCache(size int) Option {
	return func(o *clientOptions) { o.cacheSize = size }
}

// DefaultCacheBytes is the cache's byte bound without WithCacheBytes.
const DefaultCacheBytes = 64 << 20

// WithCacheBytes bounds the bytes of answers WithCache keeps: results may
// be up to 1 MiB each, so a bound in records alone can hold gigabytes.
func WithCacheBytes(n int64) Option {
	return func(o *clientOptions) { o.cacheBytes = n }
}

// WithClock sets the clock the cache reads expiry against (tests).
func WithClock(c clockwork.Clock) Option {
	return func(o *clientOptions) { o.clock = c }
}

// New connects to the idemd at target (a gRPC target such as
// "dns:///idem.internal:50051"). The connection is made lazily.
func New(target string, opts ...Option) (*Client, error) {
	o := defaultClientOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if o.creds == nil {
		o.creds = credentials.NewTLS(nil)
	}
	dial := []grpc.DialOption{grpc.WithTransportCredentials(o.creds)}
	if o.bearer != "" {
		dial = append(dial, grpc.WithPerRPCCredentials(bearer{token: o.bearer, secure: !o.plaintext}))
	}
	var chain []grpc.UnaryClientInterceptor
	if o.breakerOn {
		chain = append(chain, breakerInterceptor(o.breaker))
	}
	if o.retryMax > 1 {
		chain = append(chain, retryInterceptor(o.retryMax, o.retryBase, o.retryMaxDelay))
	}
	dial = append(dial, grpc.WithChainUnaryInterceptor(chain...),
		// idem.v1's messages by their generated encoders, others by protobuf-go.
		// gRPC's 4 MiB receive default would refuse idemd's larger answers
		// (a BatchReserve carrying completed results) after idemd acted on
		// the call, as RESOURCE_EXHAUSTED, which is retried.
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(codec.Codec{}), grpc.MaxCallRecvMsgSize(math.MaxInt32)))
	dial = append(dial, o.dialOpts...)
	conn, err := grpc.NewClient(target, dial...)
	if err != nil {
		return nil, err
	}
	c := &Client{conn: conn, rpc: idemv1.NewIdempotencyServiceClient(conn), opts: o}
	if o.cacheSize > 0 {
		c.cache, err = lru.NewWithEvict(o.cacheSize, func(_ cacheKey, e cacheEntry) { c.cacheBytes.Add(-e.size) })
		if err != nil {
			conn.Close()
			return nil, err
		}
	}
	return c, nil
}

// Conn returns the underlying connection, e.g. for the AdminService client.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

func (c *Client) fill(tenant, ns *string) {
	if *tenant == "" {
		*tenant = c.opts.tenant
	}
	if *ns == "" {
		*ns = c.opts.namespace
	}
}

// withDefaults returns req, or a clone with the default tenant and namespace
// filled in, so that the caller's message is never modified.
func withDefaults[T interface {
	proto.Message
	GetTenant() string
	GetNamespace() string
}](c *Client, req T, set func(T, string, string)) T {
	t, ns := req.GetTenant(), req.GetNamespace()
	c.fill(&t, &ns)
	if t == req.GetTenant() && ns == req.GetNamespace() {
		return req
	}
	cl := proto.Clone(req).(T)
	if m := cl.ProtoReflect(); !m.IsValid() {
		// A nil request: an empty one with the defaults, as gRPC would
		// send a nil request empty.
		cl = m.Type().New().Interface().(T)
	}
	set(cl, t, ns)
	return cl
}

// Reserve claims a key; see idemv1.IdempotencyServiceClient.Reserve. With
// WithCache, a COMPLETED answer may come from the local cache.
func (c *Client) Reserve(ctx context.Context, req *idemv1.ReserveRequest) (*idemv1.ReserveResponse, error) {
	req = withDefaults(c, req, func(r *idemv1.ReserveRequest, t, ns string) { r.Tenant, r.Namespace = t, ns })
	// A call whose context ended answers ctx.Err(), from the cache too.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ck := cacheKey{req.GetTenant(), req.GetNamespace(), req.GetKey()}
	if c.cache != nil && !alwaysRefused(req.GetLeaseTtl(), req.GetRetention(), req.GetWait()) {
		if resp, ok := c.cached(ck, req.GetFingerprint()); ok {
			return resp, nil
		}
	}
	resp, err := c.rpc.Reserve(ctx, req)
	if err != nil {
		return nil, callError(ctx, err)
	}
	if resp.GetOutcome() == idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED {
		c.remember(ck, resp.GetRecord())
	} else {
		c.forgetUnlike(ck, resp.GetRecord())
	}
	return resp, nil
}

// Complete stores the result of the attempt holding req.Token.
func (c *Client) Complete(ctx context.Context, req *idemv1.CompleteRequest) (*idemv1.CompleteResponse, error) {
	req = withDefaults(c, req, func(r *idemv1.CompleteRequest, t, ns string) { r.Tenant, r.Namespace = t, ns })
	resp, err := c.rpc.Complete(ctx, req)
	if err != nil {
		return nil, callError(ctx, err)
	}
	c.remember(cacheKey{req.GetTenant(), req.GetNamespace(), req.GetKey()}, resp.GetRecord())
	return resp, nil
}

// Release gives a key up without caching a result.
func (c *Client) Release(ctx context.Context, req *idemv1.ReleaseRequest) (*idemv1.ReleaseResponse, error) {
	req = withDefaults(c, req, func(r *idemv1.ReleaseRequest, t, ns string) { r.Tenant, r.Namespace = t, ns })
	resp, err := c.rpc.Release(ctx, req)
	return resp, callError(ctx, err)
}

// ExtendLease keeps the lease of the attempt holding req.Token alive.
func (c *Client) ExtendLease(ctx context.Context, req *idemv1.ExtendLeaseRequest) (*idemv1.ExtendLeaseResponse, error) {
	req = withDefaults(c, req, func(r *idemv1.ExtendLeaseRequest, t, ns string) { r.Tenant, r.Namespace = t, ns })
	resp, err := c.rpc.ExtendLease(ctx, req)
	return resp, callError(ctx, err)
}

// Checkpoint records the phase the attempt holding req.Token reached.
func (c *Client) Checkpoint(ctx context.Context, req *idemv1.CheckpointRequest) (*idemv1.CheckpointResponse, error) {
	req = withDefaults(c, req, func(r *idemv1.CheckpointRequest, t, ns string) { r.Tenant, r.Namespace = t, ns })
	resp, err := c.rpc.Checkpoint(ctx, req)
	return resp, callError(ctx, err)
}

// Lookup reads a record.
func (c *Client) Lookup(ctx context.Context, req *idemv1.LookupRequest) (*idemv1.LookupResponse, error) {
	req = withDefaults(c, req, func(r *idemv1.LookupRequest, t, ns string) { r.Tenant, r.Namespace = t, ns })
	resp, err := c.rpc.Lookup(ctx, req)
	if err != nil {
		err = callError(ctx, err)
		if errors.Is(err, ErrNotFound) {
			// The record is gone (expired, or deleted early): so is any
			// answer cached for it.
			c.forgetUnlike(cacheKey{req.GetTenant(), req.GetNamespace(), req.GetKey()}, nil)
		}
		return nil, err
	}
	c.forgetUnlike(cacheKey{req.GetTenant(), req.GetNamespace(), req.GetKey()}, resp.GetRecord())
	return resp, nil
}

// BatchReserve reserves up to 1,000 keys of one namespace. idemd bounds
// the size of its answer and answers the records past the bound with a
// RESOURCE_EXHAUSTED item error; BatchReserve asks for those again one by
// one with Reserve, so the answer is whole. An item whose Reserve fails
// carries that error instead; once ctx ends, the items not yet asked keep
// theirs, and the answer is still returned (it holds the reservations made).
func (c *Client) BatchReserve(ctx context.Context, req *idemv1.BatchReserveRequest) (*idemv1.BatchReserveResponse, error) {
	req = withDefaults(c, req, func(r *idemv1.BatchReserveRequest, t, ns string) { r.Tenant, r.Namespace = t, ns })
	resp, err := c.rpc.BatchReserve(ctx, req)
	if err != nil {
		return nil, callError(ctx, err)
	}
	fillBatchReserve(ctx, c.Reserve, req, resp)
	// Each item's answer tells the cache what a Reserve's would.
	for i, r := range resp.GetResults() {
		if c.cache == nil {
			break
		}
		if r.GetError() != nil || i >= len(req.GetItems()) {
			continue
		}
		ck := cacheKey{req.GetTenant(), req.GetNamespace(), req.GetItems()[i].GetKey()}
		if r.GetOutcome() == idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED {
			c.remember(ck, r.GetRecord())
		} else {
			c.forgetUnlike(ck, r.GetRecord())
		}
	}
	return resp, nil
}

// fillBatchReserve replaces the items of resp that idemd left out for the
// answer's size with reserve's answers. Those records are unchanged by the
// batch (RESERVED items are never left out), so asking again is safe; it
// goes one key at a time, as each answer may be as large as a result.
func fillBatchReserve(ctx context.Context, reserve func(context.Context, *idemv1.ReserveRequest) (*idemv1.ReserveResponse, error),
	req *idemv1.BatchReserveRequest, resp *idemv1.BatchReserveResponse) {
	items := req.GetItems()
	for i, r := range resp.GetResults() {
		if codes.Code(r.GetError().GetCode()) != codes.ResourceExhausted || i >= len(items) {
			continue
		}
		one, err := reserve(ctx, &idemv1.ReserveRequest{
			Tenant:      req.GetTenant(),
			Namespace:   req.GetNamespace(),
			Key:         items[i].GetKey(),
			Fingerprint: items[i].GetFingerprint(),
			LeaseTtl:    req.GetLeaseTtl(),
			Retention:   req.GetRetention(),
		})
		switch {
		case ctx.Err() != nil && err != nil:
			return
		case err != nil:
			st := status.Convert(err)
			resp.Results[i] = &idemv1.BatchReserveResponse_Result{Error: &idemv1.ItemError{Code: int32(st.Code()), Message: st.Message()}}
		default:
			resp.Results[i] = &idemv1.BatchReserveResponse_Result{Outcome: one.GetOutcome(), Record: one.GetRecord()}
		}
	}
}

// BatchComplete completes up to 1,000 keys of one namespace. A request
// larger than idemd reads (DefaultMaxRequestBytes, 4 MiB, unless
// WithMaxRequestBytes says otherwise), such as five 1 MiB results, is sent
// as several BatchComplete calls in request order, each under that bound,
// and the answers are merged in request order: each item keeps its own
// record or error, and item errors name the item's index in req. An item
// too large to go with any other is sent alone; if idemd refuses even that
// by size, the item alone fails with INVALID_ARGUMENT naming its result,
// as idemd names a result over its limit. Every call carries ctx (its
// deadline bounds them all) and is retried as one call is (WithRetry); a
// call failing as a whole fails BatchComplete with that error, as one call
// would, though items of earlier calls may have been completed: repeating
// the same BatchComplete is safe, as a repeated Complete succeeds again.
// A request of more than 1,000 items is not split, so that idemd still
// refuses it as too many items.
func (c *Client) BatchComplete(ctx context.Context, req *idemv1.BatchCompleteRequest) (*idemv1.BatchCompleteResponse, error) {
	req = withDefaults(c, req, func(r *idemv1.BatchCompleteRequest, t, ns string) { r.Tenant, r.Namespace = t, ns })
	var resp *idemv1.BatchCompleteResponse
	var err error
	if chunks := splitBatchComplete(req, c.opts.maxRequest); chunks != nil {
		resp, err = sendBatchComplete(ctx, c.rpc.BatchComplete, len(req.GetItems()), chunks)
	} else {
		resp, err = c.rpc.BatchComplete(ctx, req)
	}
	if err != nil {
		return nil, callError(ctx, err)
	}
	for _, r := range resp.GetResults() {
		if r.GetError() == nil {
			c.remember(cacheKey{req.GetTenant(), req.GetNamespace(), r.GetRecord().GetKey()}, r.GetRecord())
		}
	}
	return resp, nil
}

// alwaysRefused reports a duration that idem refuses whatever its limits
// (negative, or not a valid google.protobuf.Duration). A Reserve carrying
// one goes to idemd even when the cache holds its key, so it is answered
// INVALID_ARGUMENT naming the field, as without the cache. Durations over
// a configured maximum cannot be told here: the limits are idemd's.
func alwaysRefused(ds ...*durationpb.Duration) bool {
	for _, d := range ds {
		if d != nil && (d.CheckValid() != nil || d.AsDuration() < 0) {
			return true
		}
	}
	return false
}

type cacheKey struct{ tenant, namespace, key string }

type cacheEntry struct {
	fingerprint []byte
	resp        *idemv1.ReserveResponse
	expires     time.Time
	size        int64
}

func (c *Client) cached(k cacheKey, fp []byte) (*idemv1.ReserveResponse, bool) {
	if c.cache == nil {
		return nil, false
	}
	e, ok := c.cache.Get(k)
	if !ok || !bytes.Equal(e.fingerprint, fp) {
		return nil, false
	}
	if !c.opts.clock.Now().Before(e.expires) {
		c.cache.Remove(k)
		return nil, false
	}
	return proto.Clone(e.resp).(*idemv1.ReserveResponse), true
}

func (c *Client) remember(k cacheKey, rec *idemv1.Record) {
	if c.cache == nil || rec.GetState() != idemv1.RecordState_RECORD_STATE_COMPLETED || rec.GetExpiresAt() == nil {
		return
	}
	// k names the tenant as the request did (maybe empty), not as the
	// server resolved it, so the next request with the same name hits.
	size := int64(proto.Size(rec) + len(k.tenant) + len(k.namespace) + len(k.key))
	if size > c.opts.cacheBytes {
		// An older answer for k is not this record's: drop it.
		c.cacheMu.Lock()
		c.cache.Remove(k)
		c.cacheMu.Unlock()
		return
	}
	resp := &idemv1.ReserveResponse{Outcome: idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED, Record: proto.Clone(rec).(*idemv1.Record)}
	// Add does not call the eviction callback for a key it replaces, so
	// the old entry goes first, through it.
	c.cacheMu.Lock()
	defer c.cacheMu.Unlock()
	c.cache.Remove(k)
	c.cacheBytes.Add(size)
	c.cache.Add(k, cacheEntry{fingerprint: bytes.Clone(rec.GetFingerprint()), resp: resp, expires: rec.GetExpiresAt().AsTime(), size: size})
	for c.cacheBytes.Load() > c.opts.cacheBytes {
		if _, _, ok := c.cache.RemoveOldest(); !ok {
			break
		}
	}
}

// forgetUnlike drops the answer cached for k unless rec, what idemd just
// answered for k, is that same completed record: a Reserve answered
// RESERVED or IN_PROGRESS, or MISMATCH against another fingerprint, shows
// the cached record gone (an operator deleted it early) and the key
// another command's. A nil rec (a Lookup answered NOT_FOUND) drops it.
func (c *Client) forgetUnlike(k cacheKey, rec *idemv1.Record) {
	if c.cache == nil {
		return
	}
	e, ok := c.cache.Peek(k)
	if !ok || rec.GetState() == idemv1.RecordState_RECORD_STATE_COMPLETED && bytes.Equal(e.fingerprint, rec.GetFingerprint()) {
		return
	}
	c.cacheMu.Lock()
	c.cache.Remove(k)
	c.cacheMu.Unlock()
}

type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.secure }

// retryInterceptor retries calls failing with UNAVAILABLE or
// RESOURCE_EXHAUSTED (see WithRetry). It is not go-grpc-middleware's: that
// one's backoff sees neither the error's RetryInfo nor whether the pause
// fits before the deadline.
func retryInterceptor(maxAttempts uint, base, maxDelay time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		for attempt := uint(1); ; attempt++ {
			err := invoker(ctx, method, req, reply, cc, opts...)
			if !retryable(err) || attempt >= maxAttempts || ctx.Err() != nil {
				return err
			}
			d := backoff(base, maxDelay, attempt, err, rand.Float64)
			// Sleeping past the deadline would only swap idem's answer for
			// the caller's deadline, and keep fail-open from running.
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d {
				return err
			}
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return status.FromContextError(ctx.Err()).Err()
			case <-t.C:
			}
		}
	}
}

// retryable: UNAVAILABLE, or idemd shedding load (RESOURCE_EXHAUSTED with
// RetryInfo). gRPC's own RESOURCE_EXHAUSTED (a message over a size limit)
// fails the same way every time.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable:
		return true
	case codes.ResourceExhausted:
		_, ok := retryDelayOf(err)
		return ok
	}
	return false
}

// backoff is the pause after the attempt-th failure, err: base·2^(n-1)
// with ±20% jitter, at most maxDelay, and not shorter than err's RetryInfo.
// A pause set by RetryInfo is spread up to 20% above it: idemd gives every
// caller it sheds at once the same delay, and pausing exactly that long
// would bring them all back in the same instant. rnd draws in [0, 1).
func backoff(base, maxDelay time.Duration, attempt uint, err error, rnd func() float64) time.Duration {
	d := base
	// Doubling step by step saturates instead of overflowing as a shift
	// does (base·2^30 overflows for a base over ~8.6 s).
	for i := uint(1); i < attempt && d > 0 && d < maxDelay; i++ {
		if d > maxDelay/2 {
			d = maxDelay
			break
		}
		d *= 2
	}
	if d > maxDelay || d <= 0 {
		d = maxDelay
	}
	j := rnd()
	d = time.Duration(float64(d) * (0.8 + 0.4*j))
	if ri, ok := retryDelayOf(err); ok && d < ri {
		d = ri + time.Duration(float64(ri)*0.2*j)
	}
	return d
}

// pastDeadline reports whether err is a DEADLINE_EXCEEDED of the caller's
// own deadline that ctx does not report yet: its timer fires a moment
// after the deadline, and gRPC reads the clock itself (a call sent in that
// moment carries a zero timeout, which idemd refuses at once).
func pastDeadline(ctx context.Context, err error) bool {
	if status.Code(err) != codes.DeadlineExceeded && !errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// callError is mapError for a call through the connection: the caller's
// own deadline is context.DeadlineExceeded (what ctx.Err() is about to
// say) even before ctx reports it.
func callError(ctx context.Context, err error) error {
	if err != nil && ctx.Err() == nil && pastDeadline(ctx, err) {
		return context.DeadlineExceeded
	}
	return mapError(ctx, err)
}

// callerGone marks errors caused by the caller's own context, which must not
// count against idem's health.
type callerGone struct{ error }

func (c callerGone) Unwrap() error { return c.error }

func breakerInterceptor(s gobreaker.Settings) grpc.UnaryClientInterceptor {
	s.IsSuccessful = func(err error) bool {
		switch status.Code(err) {
		case codes.Unavailable, codes.DeadlineExceeded:
			return false
		}
		return true
	}
	s.IsExcluded = func(err error) bool {
		var cg callerGone
		return errors.As(err, &cg)
	}
	cb := gobreaker.NewCircuitBreaker[struct{}](s)
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		switch method {
		case idemv1.IdempotencyService_Reserve_FullMethodName, idemv1.IdempotencyService_BatchReserve_FullMethodName,
			idemv1.IdempotencyService_Lookup_FullMethodName:
		default:
			// Calls on a reservation already held always go out: refusing
			// a Complete or ExtendLease loses the result or lets the lease
			// lapse, and the command runs again.
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		_, err := cb.Execute(func() (struct{}, error) {
			err := invoker(ctx, method, req, reply, cc, opts...)
			if err != nil && (ctx.Err() != nil || pastDeadline(ctx, err)) {
				return struct{}{}, callerGone{err}
			}
			return struct{}{}, err
		})
		var cg callerGone
		switch {
		case errors.As(err, &cg):
			return cg.error
		case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
			st := status.New(codes.Unavailable, "circuit breaker open: idem failed repeatedly")
			return &Error{Code: codes.Unavailable, Message: st.Message(), sentinel: ErrUnavailable, st: st}
		}
		return err
	}
}
