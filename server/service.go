package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/idemhq/idem"
	"github.com/idemhq/idem/internal/logthrottle"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/storage"
)

// Service is idem's API over a store. It implements
// idemv1.IdempotencyServiceServer and idemv1.AdminServiceServer.
type Service struct {
	idemv1.UnimplementedIdempotencyServiceServer
	idemv1.UnimplementedAdminServiceServer

	opts     options
	store    storage.Store
	resolver PolicyResolver
	notifier *notifier
	waiting  atomic.Int64
	health   *health.Server
	// failing is how many stores failed the last health check (-1 before
	// the first), so a change is logged once.
	failing atomic.Int64
	// pings are the store Pings running now, for checks to join.
	pingMu sync.Mutex
	pings  map[storage.Store]*storePing
	// quiet throttles the per-call warnings (store trouble, internal
	// errors), which an outage would otherwise write for every call.
	quiet *logthrottle.Throttle

	done      chan struct{}
	stop      context.CancelFunc
	bg        context.Context
	closeOnce sync.Once
	wg        sync.WaitGroup
}

var (
	_ idemv1.IdempotencyServiceServer = (*Service)(nil)
	_ idemv1.AdminServiceServer       = (*Service)(nil)
)

// New returns a Service over store. The caller keeps ownership of the
// store: Close stops the Service's background work, not the store.
func New(store storage.Store, opts ...Option) (*Service, error) {
	if store == nil {
		return nil, errors.New("idem: server needs a store")
	}
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	lim, err := o.limits.WithDefaults()
	if err != nil {
		return nil, err
	}
	o.limits = lim
	if o.maxWaiters < 0 {
		return nil, fmt.Errorf("idem: max waiters is negative (%d)", o.maxWaiters)
	}
	if o.storeTimeout < 0 {
		return nil, fmt.Errorf("idem: store timeout is negative (%v)", o.storeTimeout)
	}
	s := &Service{
		quiet:    logthrottle.New(logthrottle.DefaultBurst, logthrottle.DefaultWindow, o.clock.Now),
		opts:     o,
		store:    store,
		resolver: o.resolver,
		notifier: newNotifier(),
		health:   health.NewServer(),
		pings:    map[storage.Store]*storePing{},
		done:     make(chan struct{}),
	}
	if s.resolver == nil {
		s.resolver = &StaticResolver{Store: store, Default: lim.DefaultPolicy(), Namespaces: o.policies}
	}
	s.bg, s.stop = context.WithCancel(context.Background())
	s.failing.Store(-1)
	s.checkHealth()
	s.wg.Add(1)
	go s.runHealth()
	return s, nil
}

// Register registers the IdempotencyService and the AdminService.
func (s *Service) Register(reg grpc.ServiceRegistrar) {
	idemv1.RegisterIdempotencyServiceServer(reg, s)
	idemv1.RegisterAdminServiceServer(reg, s)
}

// Drain marks the Service NOT_SERVING for good while it goes on answering
// calls, so that load balancers move new calls to other replicas before
// shutdown stops accepting them. Close follows.
func (s *Service) Drain() { s.health.Shutdown() }

// Close marks the Service NOT_SERVING, ends every waiting Reserve with the
// outcome at that moment, and stops the health checker. It does not close
// the store. Close is idempotent.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		s.stop()
		s.health.Shutdown()
		s.wg.Wait()
	})
	return nil
}

// Limits returns the limits in force, defaults filled in.
func (s *Service) Limits() Limits { return s.opts.limits }

// scope is what a request's tenant and namespace resolve to.
type scope struct {
	tenant string
	store  boundedStore
	pol    Policy
}

// scope checks tenant and namespace, resolves the tenant (which may refuse
// the call) and picks the namespace's store and policy. With a bad tenant
// or namespace it reports them in v and answers a policy to check the
// other fields against: the namespace's when only the tenant is bad (its
// narrower limits are bad fields too, and a codes-only namespace must not
// refuse a result it drops), else the server's default.
func (s *Service) scope(ctx context.Context, v *violations, tenant, namespace string, nsRequired bool) (scope, error) {
	l := &s.opts.limits
	n := len(*v)
	v.checkText("tenant", tenant, l.MaxTenantBytes, false)
	m := len(*v)
	v.checkText("namespace", namespace, l.MaxNamespaceBytes, nsRequired)
	nsBad := len(*v) > m
	if len(*v) > n {
		pol := l.DefaultPolicy()
		if !nsBad {
			// The policy alone is used: nothing reaches a store.
			_, p := s.resolver.Resolve(tenant, namespace)
			pol = p.normalize(*l)
		}
		return scope{store: s.bounded(s.store), pol: pol}, nil
	}
	t, err := s.opts.tenant(ctx, tenant)
	if err != nil {
		return scope{}, err
	}
	if len(t) > l.MaxTenantBytes {
		// The tenant comes from the caller's credentials, not the request:
		// the operator's mapping breaks the server's own limit.
		return scope{}, fmt.Errorf("%w: the tenant of these credentials is %d bytes, more than this server's limit of %d",
			idem.ErrPermissionDenied, len(t), l.MaxTenantBytes)
	}
	st, pol := s.resolver.Resolve(t, namespace)
	if st == nil {
		st = s.store
	}
	return scope{tenant: t, store: s.bounded(st), pol: pol.normalize(*l)}, nil
}

// checkResult validates the part of a result the namespace stores: with
// StoreResults off only its code, so a large or odd response is not refused
// for bytes that are dropped anyway (a refused Complete lets the command run
// again).
func (sc scope) checkResult(v *violations, field string, r *idemv1.Result) *storage.Result {
	if !sc.pol.StoreResults && r != nil {
		r = &idemv1.Result{Code: r.GetCode()}
	}
	return v.checkResult(field, r, sc.pol.MaxResultSize)
}

// Reserve implements idemv1.IdempotencyServiceServer.
func (s *Service) Reserve(ctx context.Context, req *idemv1.ReserveRequest) (*idemv1.ReserveResponse, error) {
	const method = idemv1.IdempotencyService_Reserve_FullMethodName
	l := &s.opts.limits
	var v violations
	sc, err := s.scope(ctx, &v, req.GetTenant(), req.GetNamespace(), true)
	if err != nil {
		return nil, s.Status(ctx, method, err)
	}
	s.checkKey(&v, "key", req.GetKey())
	v.checkBytes("fingerprint", req.GetFingerprint(), l.MaxFingerprintBytes)
	lease := v.checkDuration("lease_ttl", req.GetLeaseTtl(), l.MinLease, sc.pol.MaxLease, sc.pol.DefaultLease)
	ret := v.checkDuration("retention", req.GetRetention(), l.MinRetention, sc.pol.MaxRetention, sc.pol.DefaultRetention)
	wait := v.checkDuration("wait", req.GetWait(), 0, l.MaxWait, 0)
	if err := v.err(); err != nil {
		return nil, err
	}
	p := storage.ReserveParams{
		ID:          storage.ID{Tenant: sc.tenant, Namespace: req.GetNamespace(), Key: req.GetKey()},
		Fingerprint: req.GetFingerprint(),
		LeaseTTL:    lease,
		Retention:   ret,
	}
	out, rec, err := s.reserve(ctx, sc.store, p, wait)
	if err != nil {
		return nil, s.Status(ctx, method, err)
	}
	resp, r := withRecord[idemv1.ReserveResponse](rec, out != storage.OutcomeMismatch)
	resp.Outcome, resp.Record = outcomeToProto(out), r
	return resp, nil
}

// Complete implements idemv1.IdempotencyServiceServer.
func (s *Service) Complete(ctx context.Context, req *idemv1.CompleteRequest) (*idemv1.CompleteResponse, error) {
	const method = idemv1.IdempotencyService_Complete_FullMethodName
	l := &s.opts.limits
	var v violations
	sc, err := s.scope(ctx, &v, req.GetTenant(), req.GetNamespace(), true)
	if err != nil {
		return nil, s.Status(ctx, method, err)
	}
	s.checkKey(&v, "key", req.GetKey())
	v.checkToken("token", req.GetToken())
	res := sc.checkResult(&v, "result", req.GetResult())
	ret := v.checkDuration("retention", req.GetRetention(), l.MinRetention, sc.pol.MaxRetention, sc.pol.DefaultRetention)
	if err := v.err(); err != nil {
		return nil, err
	}
	id := storage.ID{Tenant: sc.tenant, Namespace: req.GetNamespace(), Key: req.GetKey()}
	rec, err := sc.store.Complete(ctx, storage.CompleteParams{ID: id, Token: req.GetToken(), Result: res, Retention: ret})
	if err != nil {
		return nil, s.Status(ctx, method, err)
	}
	s.notifier.notify(id)
	resp, r := withRecord[idemv1.CompleteResponse](rec, true)
	resp.Record = r
	return resp, nil
}

// Release implements idemv1.IdempotencyServiceServer.
func (s *Service) Release(ctx context.Context, req *idemv1.ReleaseRequest) (*idemv1.ReleaseResponse, error) {
	const method = idemv1.IdempotencyService_Release_FullMethodName
	var v violations
	sc, err := s.scope(ctx, &v, req.GetTenant(), req.GetNamespace(), true)
	if err != nil {
		return nil, s.Status(ctx, method, err)
	}
	s.checkKey(&v, "key", req.GetKey())
	v.checkToken("token", req.GetToken())
	if err := v.err(); err != nil {
		return nil, err
	}
	id := storage.ID{Tenant: sc.tenant, Namespace: req.GetNamespace(), Key: req.GetKey()}
	rec, err := sc.store.Release(ctx, id, req.GetToken())
	if err != nil {
		return nil, s.Status(ctx, method, err)
	}
	s.notifier.notify(id)
	resp, r := withRecord[idemv1.ReleaseResponse](rec, true)
	resp.Record = r
	return resp, nil
}

// ExtendLease implements idemv1.IdempotencyServiceServer.
func (s *Service) ExtendLease(ctx context.Context, req *idemv1.ExtendLeaseRequest) (*idemv1.ExtendLeaseResponse, error) {
	const method = idemv1.IdempotencyService_ExtendLease_FullMethodName
	l := &s.opts.limits
	var v violations
	sc, err := s.scope(ctx, &v, req.GetTenant(), req.GetNamespace(), true)
	if err != nil {
		return nil, s.Status(ctx, method, err)
	}
	s.checkKey(&v, "key", req.GetKey())
	v.checkToken("token", req.GetToken())
	lease := v.checkDuration("lease_ttl", req.GetLeaseTtl(), l.MinLease, sc.pol.MaxLease, sc.pol.DefaultLease)
	if err := v.err(); err != nil {
		return nil, err
	}
	id := storage.ID{Tenant: sc.tenant, Namespace: req.GetNamespace(), Key: req.GetKey()}
	rec, err := sc.store.ExtendLease(ctx, id, req.GetToken(), lease)
	if err != nil {
		return nil, s.Status(ctx, method, err)
	}
	resp, r := withRecord[idemv1.ExtendLeaseResponse](rec, true)
	resp.Record = r
	return resp, nil
}

// Checkpoint implements idemv1.IdempotencyServiceServer.
func (s *Service) Checkpoint(ctx context.Context, req *idemv1.CheckpointRequest) (*idemv1.CheckpointResponse, error) {
	const method = idemv1.IdempotencyService_Checkpoint_FullMethodName
	l := &s.opts.limits
	var v violations
	sc, err := s.scope(ctx, &v, req.GetTenant(), req.GetNamespace(), true)
	if err != nil {
		return nil, s.Status(ctx, method, err)
	}
	s.checkKey(&v, "key", req.GetKey())
	v.checkToken("token", req.GetToken())
	v.checkText("phase", req.GetPhase(), l.MaxPhaseBytes, false)
	v.checkBytes("data", req.GetData(), sc.pol.MaxResultSize)
	if err := v.err(); err != nil {
		return nil, err
	}
	id := storage.ID{Tenant: sc.tenant, Namespace: req.GetNamespace(), Key: req.GetKey()}
	rec, err := sc.store.Checkpoint(ctx, id, req.GetToken(), storage.Checkpoint{Phase: req.GetPhase(), Data: req.GetData()})
	if err != nil {
		return nil, s.Status(ctx, method, err)
	}
	resp, r := withRecord[idemv1.CheckpointResponse](rec, true)
	resp.Record = r
	return resp, nil
}

// Lookup implements idemv1.IdempotencyServiceServer.
func (s *Service) Lookup(ctx context.Context, req *idemv1.LookupRequest) (*idemv1.LookupResponse, error) {
	const method = idemv1.IdempotencyService_Lookup_FullMethodName
	sc, id, err := s.keyScope(ctx, method, req)
	if err != nil {
		return nil, err
	}
	rec, err := sc.store.Lookup(ctx, id)
	if err != nil {
		return nil, s.Status(ctx, method, err)
	}
	resp, r := withRecord[idemv1.LookupResponse](rec, true)
	resp.Record = r
	return resp, nil
}

// checkBatchSize checks a batch is not over the limit; the whole call fails if it is.
func (s *Service) checkBatchSize(v *violations, n int) {
	if n > s.opts.limits.MaxBatch {
		v.add("items", "has %d items, more than %d", n, s.opts.limits.MaxBatch)
	}
}

// checkBatchKey checks item i's key; seen holds the keys of earlier good
// items, so a repeated key fails alone and the first one proceeds.
func (s *Service) checkBatchKey(v *violations, seen map[string]int, i int, key string) {
	field := fmt.Sprintf("items[%d].key", i)
	s.checkKey(v, field, key)
	if j, dup := seen[key]; dup {
		v.add(field, "repeats items[%d].key", j)
	}
}

// batchItem is one item of a batch call: the store parameters it was
// validated into, the store's answer, and its own error — a violation of
// its fields, or the store's error for it.
type batchItem[P, R any] struct {
	p   P
	r   R
	err *idemv1.ItemError
}

// runBatch validates the n items of a batch call (check turns item i into
// store parameters and reports its bad fields; keys are checked here, a
// repeated key failing alone), sends the good items to the store in one
// call, and answers every item in request order.
func runBatch[P, R any](ctx context.Context, s *Service, method string, n int, key func(int) string,
	check func(i int, v *violations) P, call func(context.Context, []P) ([]R, error), errOf func(R) error) ([]batchItem[P, R], error) {
	out := make([]batchItem[P, R], n)
	params := make([]P, 0, n)
	index := make([]int, 0, n)
	seen := make(map[string]int, n)
	for i := range n {
		var v violations
		s.checkBatchKey(&v, seen, i, key(i))
		p := check(i, &v)
		if len(v) > 0 {
			out[i].err = invalidItem(v)
			continue
		}
		seen[key(i)] = i
		out[i].p = p
		params = append(params, p)
		index = append(index, i)
	}
	if len(params) == 0 {
		return out, nil
	}
	got, err := call(ctx, params)
	if err != nil {
		return nil, s.Status(ctx, method, err)
	}
	if len(got) != len(params) {
		return nil, s.Status(ctx, method, fmt.Errorf("store answered %d results for %d batch items", len(got), len(params)))
	}
	for j, r := range got {
		it := &out[index[j]]
		it.r = r
		if err := errOf(r); err != nil {
			code, msg := s.itemError(ctx, method, err)
			it.err = &idemv1.ItemError{Code: code, Message: msg}
		}
	}
	return out, nil
}

// BatchReserve implements idemv1.IdempotencyServiceServer. An item with a
// bad field fails alone with its own error; only good items reach the store.
func (s *Service) BatchReserve(ctx context.Context, req *idemv1.BatchReserveRequest) (*idemv1.BatchReserveResponse, error) {
	const method = idemv1.IdempotencyService_BatchReserve_FullMethodName
	l := &s.opts.limits
	var v violations
	sc, err := s.scope(ctx, &v, req.GetTenant(), req.GetNamespace(), true)
	if err != nil {
		return nil, s.Status(ctx, method, err)
	}
	lease := v.checkDuration("lease_ttl", req.GetLeaseTtl(), l.MinLease, sc.pol.MaxLease, sc.pol.DefaultLease)
	ret := v.checkDuration("retention", req.GetRetention(), l.MinRetention, sc.pol.MaxRetention, sc.pol.DefaultRetention)
	s.checkBatchSize(&v, len(req.GetItems()))
	if err := v.err(); err != nil {
		return nil, err
	}
	items := req.GetItems()
	out, err := runBatch(ctx, s, method, len(items), func(i int) string { return items[i].GetKey() },
		func(i int, v *violations) storage.ReserveParams {
			v.checkBytes(fmt.Sprintf("items[%d].fingerprint", i), items[i].GetFingerprint(), l.MaxFingerprintBytes)
			return storage.ReserveParams{
				ID:          storage.ID{Tenant: sc.tenant, Namespace: req.GetNamespace(), Key: items[i].GetKey()},
				Fingerprint: items[i].GetFingerprint(),
				LeaseTTL:    lease,
				Retention:   ret,
			}
		}, sc.store.BatchReserve, func(r storage.ReserveResult) error { return r.Err })
	if err != nil {
		return nil, err
	}
	results := make([]*idemv1.BatchReserveResponse_Result, len(out))
	budget := answerBytes(*l)
	refusal := func() *idemv1.BatchReserveResponse_Result {
		return &idemv1.BatchReserveResponse_Result{Error: &idemv1.ItemError{
			Code:    int32(codes.ResourceExhausted),
			Message: fmt.Sprintf("idem: the answer's %d-byte budget is spent: Reserve or Lookup this key on its own (this left its record unchanged; asking again is safe)", budget),
		}}
	}
	refused := entrySize(refusal())
	// RESERVED items and errors are counted first and always answered: a
	// dropped RESERVED item would leave its key held for a whole lease.
	// The others, which changed nothing, are counted as refused, so that
	// the refusals fit too.
	used := 0
	for i, it := range out {
		res := &idemv1.BatchReserveResponse_Result{Error: it.err}
		if it.err == nil {
			res.Outcome = outcomeToProto(it.r.Outcome)
			res.Record = reserveRecord(it.r.Outcome, it.r.Record)
		}
		results[i] = res
		if it.err != nil || it.r.Outcome == storage.OutcomeReserved {
			used += entrySize(res)
		} else {
			used += refused
		}
	}
	// They get their records in request order while these fit.
	for i, it := range out {
		if it.err != nil || it.r.Outcome == storage.OutcomeReserved {
			continue
		}
		if n := entrySize(results[i]) - refused; used+n <= budget {
			used += n
			continue
		}
		results[i] = refusal()
	}
	return &idemv1.BatchReserveResponse{Results: results}, nil
}

// answerBytes bounds the answers that list many records (BatchReserve,
// BatchComplete, ListKeys) to what idemd reads in a request: 1,000
// records with large results would otherwise make one call build (and
// gRPC encode again) up to a GiB. A record alone always fits (a result and
// a checkpoint, each at most MaxResultBytes), and at the default limits it
// is 4 MiB, gRPC's default receive limit.
func answerBytes(l Limits) int { return maxRequestBytes(l) }

// entrySize is what m adds to an answer as an entry of its field 1 (the
// results or records): its bytes and their framing.
func entrySize(m interface{ SizeVT() int }) int {
	return protowire.SizeTag(1) + protowire.SizeBytes(m.SizeVT())
}

// BatchComplete implements idemv1.IdempotencyServiceServer, with the same
// per-item validation as BatchReserve.
func (s *Service) BatchComplete(ctx context.Context, req *idemv1.BatchCompleteRequest) (*idemv1.BatchCompleteResponse, error) {
	const method = idemv1.IdempotencyService_BatchComplete_FullMethodName
	l := &s.opts.limits
	var v violations
	sc, err := s.scope(ctx, &v, req.GetTenant(), req.GetNamespace(), true)
	if err != nil {
		return nil, s.Status(ctx, method, err)
	}
	ret := v.checkDuration("retention", req.GetRetention(), l.MinRetention, sc.pol.MaxRetention, sc.pol.DefaultRetention)
	s.checkBatchSize(&v, len(req.GetItems()))
	if err := v.err(); err != nil {
		return nil, err
	}
	items := req.GetItems()
	out, err := runBatch(ctx, s, method, len(items), func(i int) string { return items[i].GetKey() },
		func(i int, v *violations) storage.CompleteParams {
			v.checkToken(fmt.Sprintf("items[%d].token", i), items[i].GetToken())
			res := sc.checkResult(v, fmt.Sprintf("items[%d].result", i), items[i].GetResult())
			return storage.CompleteParams{
				ID:        storage.ID{Tenant: sc.tenant, Namespace: req.GetNamespace(), Key: items[i].GetKey()},
				Token:     items[i].GetToken(),
				Result:    res,
				Retention: ret,
			}
		}, sc.store.BatchComplete, func(r storage.CompleteResult) error { return r.Err })
	if err != nil {
		return nil, err
	}
	results := make([]*idemv1.BatchCompleteResponse_Result, len(out))
	used := 0
	for i, it := range out {
		results[i] = &idemv1.BatchCompleteResponse_Result{Error: it.err}
		used += entrySize(results[i])
		if it.err == nil {
			s.notifier.notify(it.p.ID)
		}
	}
	// Records are answered in request order while they fit the budget of
	// BatchReserve's answer: each carries its checkpoint, which the request
	// did not, so a small request could otherwise ask for a GiB. A
	// completed item past the budget is answered without its record.
	budget := answerBytes(*l)
	for i, it := range out {
		if it.err != nil {
			continue
		}
		res := &idemv1.BatchCompleteResponse_Result{Record: recordToProto(it.r.Record, true)}
		if n := entrySize(res) - entrySize(results[i]); used+n <= budget {
			results[i] = res
			used += n
		}
	}
	return &idemv1.BatchCompleteResponse{Results: results}, nil
}

func invalidItem(v violations) *idemv1.ItemError {
	return &idemv1.ItemError{Code: int32(codes.InvalidArgument), Message: v.message()}
}
