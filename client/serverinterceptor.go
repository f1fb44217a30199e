package client

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/idemhq/idem"
	"github.com/idemhq/idem/internal/keyhash"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// Result metadata written by the interceptors.
const (
	metaType    = "idem-type"
	metaStream  = "idem-stream"
	metaHeader  = "idem-header"
	metaTrailer = "idem-trailer"
)

// ReasonResultNotStored: a call with this key already succeeded, and its
// response was not kept (idem's policy for the method stores only outcome
// codes, store_results: false), so it cannot be replayed.
const ReasonResultNotStored = "IDEMPOTENCY_RESULT_NOT_STORED"

// UnaryServerInterceptor deduplicates unary calls through svc: the key
// from the idempotency-key metadata, the full method as namespace, a
// SHA-256 fingerprint of method and request, a lease sized from the call's
// deadline and kept alive while the handler runs, the fencing token in the
// handler's context (TokenFromContext). A completed
// call is replayed (response or error, and the header and trailer
// metadata the handler set) with header idempotency-replayed: true,
// without running the handler.
//
// Chain it inside authentication (the tenant may come from the caller's
// credentials). Recovery may sit on either side. Inside (the house order,
// shown in ExampleUnaryClientInterceptor), a panic becomes recovery's error,
// by default a transient code, so the key is released. Outside, the
// interceptor releases the key in a deferred call and the panic goes on to
// recovery.
func UnaryServerInterceptor(svc Service, opts ...InterceptorOption) grpc.UnaryServerInterceptor {
	o := evaluateServerOptions(opts)
	g := &guard{o: o, svc: svc}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if g.passThrough(ctx, info.FullMethod) {
			return handler(ctx, req)
		}
		key, ok := incomingKey(ctx)
		if !ok {
			if o.keyOptional(info.FullMethod) {
				return handler(ctx, req)
			}
			return nil, keyMissing()
		}
		msg, ok := req.(proto.Message)
		if !ok {
			return nil, status.Error(codes.Internal, "idem: request is not a protobuf message")
		}
		fp, err := o.fingerprint(info.FullMethod, msg)
		if err != nil {
			return nil, err
		}
		a, stored, err := g.begin(ctx, info.FullMethod, key, fp)
		switch {
		case errors.Is(err, errFailOpen):
			return handler(ctx, req)
		case err != nil:
			return nil, err
		case stored != nil:
			return g.replayUnary(ctx, info.FullMethod, key, stored)
		}
		hctx := a.start(ctx)
		hctx, md := recordMetadata(hctx)
		finished := false
		defer func() {
			if !finished { // the handler panicked
				a.stop()
				a.release(ctx, "handler panicked")
			}
		}()
		resp, herr := handler(hctx, req)
		finished = true
		a.stop()
		a.finish(ctx, md.addTo(resultOf(resp, herr)), false, herr)
		return resp, herr
	}
}

// StreamServerInterceptor deduplicates streaming calls through svc.
// Server-streaming calls are keyed per call like unary ones: the response
// messages are recorded (up to WithMaxStreamMessages and WithMaxResultSize)
// and replayed in order, with the header and trailer metadata the handler
// set and header idempotency-replayed: true. Client- and bidi-streaming
// calls are deduplicated per message with WithStreamMessageKey, and pass
// through without it.
func StreamServerInterceptor(svc Service, opts ...InterceptorOption) grpc.StreamServerInterceptor {
	o := evaluateServerOptions(opts)
	g := &guard{o: o, svc: svc}
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx := ss.Context()
		if g.passThrough(ctx, info.FullMethod) {
			return handler(srv, ss)
		}
		if info.IsClientStream {
			if o.streamKey == nil {
				return handler(srv, ss)
			}
			return g.dedupeMessages(srv, ss, info.FullMethod, handler)
		}
		key, ok := incomingKey(ctx)
		if !ok {
			if o.keyOptional(info.FullMethod) {
				return handler(srv, ss)
			}
			return keyMissing()
		}
		return g.serverStream(srv, ss, info.FullMethod, key, handler)
	}
}

var errFailOpen = errors.New("idem: failing open")

type guard struct {
	o      *serverOptions
	svc    Service
	levels sync.Map // full method -> bool (pass through)
	// nsLease holds the methods whose namespace caps leases below what
	// their deadlines ask for: their Reserves name no lease, so they take
	// the namespace's default instead of being refused first each time.
	nsLease sync.Map // full method -> struct{}
}

func (g *guard) passThrough(ctx context.Context, method string) bool {
	if !g.o.selector(ctx, method) {
		return true
	}
	if v, ok := g.levels.Load(method); ok {
		return v.(bool)
	}
	pt := safeByDeclaration(method)
	g.levels.Store(method, pt)
	return pt
}

// safeByDeclaration reports whether the method's proto declares it free of
// side effects or idempotent, so deduplicating it buys nothing.
// methodDescriptor is the registered descriptor of a gRPC full method
// ("/pkg.Service/Method"), or nil.
func methodDescriptor(fullMethod string) protoreflect.MethodDescriptor {
	name := strings.Replace(strings.TrimPrefix(fullMethod, "/"), "/", ".", 1)
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		return nil
	}
	md, _ := d.(protoreflect.MethodDescriptor)
	return md
}

func safeByDeclaration(fullMethod string) bool {
	md := methodDescriptor(fullMethod)
	if md == nil {
		return false
	}
	mo, ok := md.Options().(*descriptorpb.MethodOptions)
	if !ok {
		return false
	}
	switch mo.GetIdempotencyLevel() {
	case descriptorpb.MethodOptions_NO_SIDE_EFFECTS, descriptorpb.MethodOptions_IDEMPOTENT:
		return true
	}
	return false
}

func incomingKey(ctx context.Context) (string, bool) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(MetadataKey); len(v) > 0 && v[0] != "" {
		return v[0], true
	}
	return "", false
}

func statusWith(c codes.Code, msg string, details ...proto.Message) error {
	st := status.New(c, msg)
	if len(details) > 0 {
		v1 := make([]protoadapt.MessageV1, len(details))
		for i, d := range details {
			v1[i] = protoadapt.MessageV1Of(d)
		}
		if d, err := st.WithDetails(v1...); err == nil {
			st = d
		}
	}
	return st.Err()
}

func keyMissing() error {
	return statusWith(codes.InvalidArgument, "idem: this method requires the "+MetadataKey+" metadata",
		&errdetails.ErrorInfo{Reason: ReasonKeyMissing, Domain: ErrorDomain},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: MetadataKey, Description: "missing"}}})
}

// fingerprint hashes the method and the deterministic encoding of msg, with
// the excluded fields cleared and unknown fields sorted on a clone. Unknown
// fields are raw bytes that a retry may send in another order (a newer
// client's map field); sorted, they still tell two commands apart.
func (o *serverOptions) fingerprint(method string, msg proto.Message) ([]byte, error) {
	if len(o.exclude) > 0 || hasUnknown(msg.ProtoReflect()) {
		c := proto.Clone(msg)
		o.clearExcluded(c.ProtoReflect())
		msg = c
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "idem: cannot encode request for its fingerprint: %v", err)
	}
	h := sha256.New()
	h.Write([]byte(method))
	h.Write([]byte{0})
	h.Write(b)
	return h.Sum(nil), nil
}

func (o *serverOptions) clearExcluded(m protoreflect.Message) {
	if u := m.GetUnknown(); len(u) > 0 {
		m.SetUnknown(sortedUnknown(u))
	}
	clearHere := o.excludeMsgs[m.Descriptor().FullName()]
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if clearHere && o.exclude[fd.FullName()] {
			m.Clear(fd)
			return true
		}
		if fd.Message() == nil {
			return true
		}
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				o.clearExcluded(l.Get(i).Message())
			}
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					o.clearExcluded(mv.Message())
					return true
				})
			}
		default:
			o.clearExcluded(v.Message())
		}
		return true
	})
}

// sortedUnknown returns u's fields ordered by number, then bytes, so the
// same fields sent in another order hash alike. Bytes that do not parse are
// kept as they are.
func sortedUnknown(u protoreflect.RawFields) protoreflect.RawFields {
	var fields [][]byte
	for b := []byte(u); len(b) > 0; {
		_, _, n := protowire.ConsumeField(b)
		if n < 0 {
			return u
		}
		fields = append(fields, b[:n])
		b = b[n:]
	}
	slices.SortStableFunc(fields, func(a, b []byte) int {
		na, _, _ := protowire.ConsumeTag(a)
		nb, _, _ := protowire.ConsumeTag(b)
		if na != nb {
			return cmp.Compare(na, nb)
		}
		return bytes.Compare(a, b)
	})
	return protoreflect.RawFields(bytes.Join(fields, nil))
}

// hasUnknown reports unknown fields in m or any message inside it.
func hasUnknown(m protoreflect.Message) bool {
	found := len(m.GetUnknown()) > 0
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if found || fd.Message() == nil {
			return !found
		}
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len() && !found; i++ {
				found = hasUnknown(l.Get(i).Message())
			}
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					found = hasUnknown(mv.Message())
					return !found
				})
			}
		default:
			found = hasUnknown(v.Message())
		}
		return !found
	})
	return found
}

// leaseFor sizes the lease from the call's deadline: the handler cannot
// usefully run past it, plus a second for the Complete that follows.
func (o *serverOptions) leaseFor(ctx context.Context) time.Duration {
	d := o.leaseDefault
	if dl, ok := ctx.Deadline(); ok {
		d = time.Until(dl) + time.Second
	}
	return min(max(d, o.leaseMin), o.leaseMax)
}

// attempt is one reservation held by this process.
type attempt struct {
	g      *guard
	method string
	key    string
	token  uint64
	lease  time.Duration
	// nsLease: the lease is the namespace's default, which the heartbeat
	// asks for again by naming none.
	nsLease bool

	stopHB context.CancelFunc
	hbDone chan struct{}
}

// begin reserves the key. It returns the attempt when the handler must run,
// the stored result when it must be replayed, errFailOpen when the handler
// must run unprotected, or the status to answer with.
func (g *guard) begin(ctx context.Context, method, key string, fp []byte) (*attempt, *idemv1.Result, error) {
	o := g.o
	lease := o.leaseFor(ctx)
	wait := o.wait
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl)-10*time.Millisecond)
	}
	_, nsLease := g.nsLease.Load(method)
	// No lease of its own (WithLease with a zero default): idem sends
	// zero as its default, and the heartbeat must tick at half of that.
	nsLease = nsLease || lease <= 0
	req := &idemv1.ReserveRequest{Tenant: o.tenant, Namespace: method, Key: key, Fingerprint: fp}
	if !nsLease {
		req.LeaseTtl = durationpb.New(lease)
	}
	if o.retention > 0 {
		req.Retention = durationpb.New(o.retention)
	}
	if wait > 0 {
		req.Wait = durationpb.New(wait)
	}
	resp, err := g.svc.Reserve(ctx, req)
	if err != nil && !nsLease && badField(err, "lease_ttl") {
		// The method's namespace caps leases below what the deadline asks
		// for (or WithLease asks for less than idem's minimum): take its
		// default lease and let the heartbeat extend it.
		if _, seen := g.nsLease.LoadOrStore(method, struct{}{}); !seen {
			o.logger.WarnContext(ctx, "idem refused the lease; the method uses its namespace's default lease from now on",
				"method", method, "lease", lease, "err", loggable(err))
		}
		req.LeaseTtl, nsLease = nil, true
		resp, err = g.svc.Reserve(ctx, req)
	}
	if err != nil {
		return nil, nil, g.reserveFailed(ctx, method, key, err)
	}
	rec := resp.GetRecord()
	switch resp.GetOutcome() {
	case idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED:
		if nsLease {
			// The heartbeat ticks at half of it, so it must not exceed
			// the lease the record has.
			lease = max(time.Until(rec.GetLeaseExpiresAt().AsTime()), 100*time.Millisecond)
		}
		return &attempt{g: g, method: method, key: key, token: rec.GetToken(), lease: lease, nsLease: nsLease}, nil, nil
	case idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED:
		res := rec.GetResult()
		if res == nil {
			res = &idemv1.Result{}
		}
		return nil, res, nil
	case idemv1.ReserveOutcome_RESERVE_OUTCOME_IN_PROGRESS:
		delay := 100 * time.Millisecond
		if le := rec.GetLeaseExpiresAt(); le != nil {
			delay = min(max(time.Until(le.AsTime()), delay), 5*time.Second)
		}
		return nil, nil, statusWith(codes.Aborted, "idem: a call with this idempotency key is in progress; retry later",
			&errdetails.RetryInfo{RetryDelay: durationpb.New(delay)})
	case idemv1.ReserveOutcome_RESERVE_OUTCOME_MISMATCH:
		return nil, nil, statusWith(codes.FailedPrecondition, "idem: idempotency key reused with a different request",
			&errdetails.ErrorInfo{Reason: ReasonKeyReused, Domain: ErrorDomain, Metadata: map[string]string{"key": key}})
	}
	return nil, nil, status.Errorf(codes.Internal, "idem: unexpected reserve outcome %v", resp.GetOutcome())
}

// BadFields are the request fields an INVALID_ARGUMENT from idem names in
// its google.rpc.BadRequest (none for any other error).
func BadFields(err error) []string {
	if !errors.Is(err, ErrInvalidArgument) {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return nil
	}
	var fields []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	return fields
}

// badField reports an INVALID_ARGUMENT whose BadRequest names field.
func badField(err error, field string) bool { return slices.Contains(BadFields(err), field) }

// loggable is err as these lines may show it: a damaged record's error
// names its key for the caller who owns it, and the lines show keys only
// as key_hash.
func loggable(err error) error {
	if errors.Is(err, ErrDamaged) {
		return ErrDamaged
	}
	return err
}

// keyRefused reports an INVALID_ARGUMENT that names the key alone. Any
// other field refused (tenant, retention, wait, fingerprint) comes from the
// interceptor's configuration, and passing it on would tell the caller
// that its request is wrong, with no line in the service's logs.
func keyRefused(err error) bool {
	fields := BadFields(err)
	return len(fields) > 0 && !slices.ContainsFunc(fields, func(f string) bool { return f != "key" })
}

// The log lines of this file name a key only as idemd does (key_hash), so
// they can be matched with idemd's: keys often carry personal data, and
// these lines land in the service's own logs.
func (g *guard) reserveFailed(ctx context.Context, method, key string, err error) error {
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	if keyRefused(err) {
		// The key is the caller's own input: its error is theirs to fix.
		var e *Error
		if errors.As(err, &e) && e.st != nil {
			return e.st.Err()
		}
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrResourceExhausted) {
		// idem answered and refused (a credential it does not accept, a
		// tenant it does not serve): failing open would turn
		// deduplication off unnoticed until the configuration is fixed.
		g.o.logger.ErrorContext(ctx, "idem refused the reservation; refusing call", "method", method, keyhash.Slog(key), "err", loggable(err))
		return statusWith(codes.Unavailable, "idem: idempotency store refused the call",
			&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Second)})
	}
	if g.o.failOpen(method) {
		g.o.logger.WarnContext(ctx, "idem unreachable; running handler without deduplication", "method", method, keyhash.Slog(key), "err", loggable(err))
		g.o.report(ctx, Event{Kind: EventFailOpen, Method: method, Key: key, Err: err})
		return errFailOpen
	}
	g.o.logger.WarnContext(ctx, "idem unreachable; refusing call", "method", method, keyhash.Slog(key), "err", loggable(err))
	return statusWith(codes.Unavailable, "idem: idempotency store unavailable",
		&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Second)})
}

// start begins the lease heartbeat and returns the handler's context,
// carrying the token and cancelled if the lease is lost.
func (a *attempt) start(ctx context.Context) context.Context {
	ctx = ContextWithToken(ctx, a.token)
	if !a.g.o.heartbeat {
		return ctx
	}
	hctx, cancel := context.WithCancelCause(ctx)
	a.beat(ctx, cancel)
	stopHB := a.stopHB
	a.stopHB = func() { stopHB(); cancel(nil) }
	return hctx
}

// beat starts the lease heartbeat, which calls lost if another attempt
// took the key over.
func (a *attempt) beat(ctx context.Context, lost context.CancelCauseFunc) {
	if !a.g.o.heartbeat {
		return
	}
	// The heartbeat outlives the caller: a handler whose caller gave up
	// may still be doing its work, and a lapsed lease would let the
	// caller's retry take the key over and do it again. It ends when the
	// handler is done with the key (stop).
	hbCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	a.stopHB = stop
	a.hbDone = make(chan struct{})
	go a.heartbeat(hbCtx, lost)
}

func (a *attempt) heartbeat(ctx context.Context, cancelHandler context.CancelCauseFunc) {
	defer close(a.hbDone)
	o := a.g.o
	tick := a.lease / 2
	t := o.clock.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
		req := &idemv1.ExtendLeaseRequest{Tenant: o.tenant, Namespace: a.method, Key: a.key, Token: a.token}
		if !a.nsLease {
			req.LeaseTtl = durationpb.New(a.lease)
		}
		// Bounded by the tick: a call hung on a dead connection would
		// otherwise hold up the next ticks until the lease lapsed. A
		// timed-out extend is logged below but is not a lost lease. At
		// least a second, so a short lease (or one measured on a clock
		// ahead of the store's) does not cut every extend off.
		ectx, cancel := context.WithTimeout(ctx, max(tick, time.Second))
		_, err := a.g.svc.ExtendLease(ectx, req)
		cancel()
		if err == nil || ctx.Err() != nil {
			continue
		}
		o.logger.WarnContext(ctx, "idem lease heartbeat failed", "method", a.method, keyhash.Slog(a.key), "token", a.token, "err", loggable(err))
		o.report(ctx, Event{Kind: EventHeartbeatFailed, Method: a.method, Key: a.key, Err: err})
		if errors.Is(err, ErrLeaseLost) || errors.Is(err, ErrNotFound) {
			// Another attempt owns the key now; this one's work would be
			// rejected by fencing, so stop it.
			cancelHandler(fmt.Errorf("idem: lease lost while the handler ran: %w", ErrLeaseLost))
			return
		}
	}
}

// stop ends the heartbeat and waits for it, so no goroutine outlives the call.
func (a *attempt) stop() {
	if a.stopHB != nil {
		a.stopHB()
		<-a.hbDone
		a.stopHB = nil
	}
}

func (a *attempt) cleanupCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), a.g.o.cleanupTimeout)
}

func (a *attempt) release(ctx context.Context, why string) {
	cctx, cancel := a.cleanupCtx(ctx)
	defer cancel()
	o := a.g.o
	_, err := a.g.svc.Release(cctx, &idemv1.ReleaseRequest{Tenant: o.tenant, Namespace: a.method, Key: a.key, Token: a.token})
	if err != nil {
		// LEASE_LOST or NOT_FOUND: another attempt took the key over, or it
		// expired; this process holds nothing that could block a retry.
		lvl := slog.LevelWarn
		if errors.Is(err, ErrLeaseLost) || errors.Is(err, ErrNotFound) {
			lvl = slog.LevelInfo
		}
		o.logger.Log(ctx, lvl, "idem release failed", "method", a.method, keyhash.Slog(a.key), "token", a.token, "why", why, "err", loggable(err))
		o.report(ctx, Event{Kind: EventReleaseFailed, Method: a.method, Key: a.key, Err: err})
	}
}

// finish stores res, or releases the key for transient codes, results over
// the size limit (tooLarge: a stream over its limits) and responses that
// cannot be encoded (res nil). The caller's answer does not depend on it.
func (a *attempt) finish(ctx context.Context, res *idemv1.Result, tooLarge bool, herr error) {
	o := a.g.o
	if o.transient[codeOf(herr)] {
		a.release(ctx, "transient error")
		return
	}
	if n := resultSize(res); tooLarge || n > o.maxResult {
		o.logger.WarnContext(ctx, "idem result too large to store; not cached", "method", a.method, keyhash.Slog(a.key), "size", n, "limit", o.maxResult)
		o.report(ctx, Event{Kind: EventResultTooLarge, Method: a.method, Key: a.key})
		a.release(ctx, "result too large")
		return
	}
	if res == nil {
		// Not a protobuf message, or one protobuf-go refuses (invalid
		// UTF-8 in a string field): gRPC cannot send it either, and the
		// caller got INTERNAL. Saying "too large" would send the reader
		// after the wrong limit.
		o.logger.WarnContext(ctx, "idem cannot encode the handler's response; not cached", "method", a.method, keyhash.Slog(a.key))
		a.release(ctx, "response cannot be encoded")
		return
	}
	cctx, cancel := a.cleanupCtx(ctx)
	defer cancel()
	req := &idemv1.CompleteRequest{Tenant: o.tenant, Namespace: a.method, Key: a.key, Token: a.token, Result: res}
	if o.retention > 0 {
		req.Retention = durationpb.New(o.retention)
	}
	if _, err := a.g.svc.Complete(cctx, req); err != nil {
		o.logger.ErrorContext(ctx, "idem complete failed after the handler ran; result not stored",
			slog.String("method", a.method), keyhash.Slog(a.key), slog.Uint64("token", a.token), slog.Any("err", loggable(err)))
		o.report(ctx, Event{Kind: EventCompleteFailed, Method: a.method, Key: a.key, Err: err})
		if errors.Is(err, ErrInvalidArgument) || refusedBySize(err) {
			// Refused for good (e.g. a namespace policy holds results to
			// less than WithMaxResultSize, or the request is larger than
			// idemd reads): held, the key would only make retries wait out
			// the lease before running the handler again.
			a.release(ctx, "idem refused the result")
		}
	}
}

func codeOf(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if errors.Is(err, context.Canceled) {
		return codes.Canceled
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return codes.DeadlineExceeded
	}
	return status.Code(err)
}

// resultOf encodes a unary handler's answer. A nil result means the
// response cannot be encoded, so it is not stored.
func resultOf(resp any, herr error) *idemv1.Result {
	if herr != nil {
		// As gRPC converts it for the caller: a wrapped context error
		// has its code, not UNKNOWN.
		st, ok := status.FromError(herr)
		if !ok {
			st = status.FromContextError(herr)
		}
		p := st.Proto()
		// gRPC lets a status message hold any bytes; idem stores only
		// UTF-8, and refusing the Complete would leave the key to be
		// run again once its lease ran out.
		return &idemv1.Result{Code: p.GetCode(), Message: strings.ToValidUTF8(p.GetMessage(), "\uFFFD"), Details: p.GetDetails()}
	}
	m, ok := resp.(proto.Message)
	if !ok {
		return nil
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil
	}
	return &idemv1.Result{Body: b, Metadata: map[string]string{metaType: string(m.ProtoReflect().Descriptor().FullName())}}
}

// resultSize counts bytes the way idem's result size limit does.
func resultSize(r *idemv1.Result) int {
	n := len(r.GetMessage()) + len(r.GetBody())
	for _, d := range r.GetDetails() {
		n += max(len(d.GetTypeUrl())+len(d.GetValue()), idem.ResultEntryMinBytes)
	}
	for k, v := range r.GetMetadata() {
		n += max(len(k)+len(v), idem.ResultEntryMinBytes)
	}
	return n
}

func replayedHeader() metadata.MD { return metadata.Pairs(ReplayedHeader, "true") }

func storedStatus(r *idemv1.Result) error {
	if responseNotStored(r) {
		return statusWith(codes.AlreadyExists, "idem: a call with this idempotency key already succeeded; its response was not stored (store_results: false), so it cannot be replayed",
			&errdetails.ErrorInfo{Reason: ReasonResultNotStored, Domain: ErrorDomain})
	}
	if r.GetCode() == 0 {
		return nil
	}
	return status.ErrorProto(&spb.Status{Code: r.GetCode(), Message: r.GetMessage(), Details: r.GetDetails()})
}

// responseNotStored reports a success stored as its code alone: the
// interceptors always record a success with its type or stream metadata.
func responseNotStored(r *idemv1.Result) bool {
	return r.GetCode() == 0 && len(r.GetMetadata()) == 0 && len(r.GetBody()) == 0
}

// emptyResponse is the method's response when its type has no fields, so
// a success without a stored response still replays exactly; nil otherwise.
func emptyResponse(fullMethod string) proto.Message {
	md := methodDescriptor(fullMethod)
	if md == nil || md.Output().Fields().Len() != 0 {
		return nil
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	if err != nil {
		return nil
	}
	return mt.New().Interface()
}

func newStored(r *idemv1.Result) (proto.Message, error) {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(r.GetMetadata()[metaType]))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "idem: stored response type %q is not linked into this binary", r.GetMetadata()[metaType])
	}
	return mt.New().Interface(), nil
}

func (g *guard) replayUnary(ctx context.Context, method, key string, r *idemv1.Result) (any, error) {
	replayMetadata(ctx, r)
	g.o.report(ctx, Event{Kind: EventReplayed, Method: method, Key: key})
	if responseNotStored(r) {
		if m := emptyResponse(method); m != nil {
			return m, nil
		}
	}
	if err := storedStatus(r); err != nil {
		return nil, err
	}
	m, err := newStored(r)
	if err != nil {
		return nil, err
	}
	if err := proto.Unmarshal(r.GetBody(), m); err != nil {
		return nil, status.Errorf(codes.Internal, "idem: stored response does not decode: %v", err)
	}
	return m, nil
}

// mdRecorder passes a unary handler's header and trailer metadata on and
// keeps what was sent, so a replay answers with them too (a resource id in
// a trailer is part of the answer).
type mdRecorder struct {
	grpc.ServerTransportStream
	mu              sync.Mutex
	header, trailer metadata.MD
}

// recordMetadata returns ctx with a recorder in front of its transport
// stream; the recorder is nil (and records nothing) without one.
func recordMetadata(ctx context.Context) (context.Context, *mdRecorder) {
	sts := grpc.ServerTransportStreamFromContext(ctx)
	if sts == nil {
		return ctx, nil
	}
	r := &mdRecorder{ServerTransportStream: sts}
	return grpc.NewContextWithServerTransportStream(ctx, r), r
}

// Only what gRPC accepted is kept: a header set after headers went out
// never reached the caller.
func (r *mdRecorder) SetHeader(md metadata.MD) error {
	if err := r.ServerTransportStream.SetHeader(md); err != nil {
		return err
	}
	r.keepHeader(md)
	return nil
}

func (r *mdRecorder) SendHeader(md metadata.MD) error {
	if err := r.ServerTransportStream.SendHeader(md); err != nil {
		return err
	}
	r.keepHeader(md)
	return nil
}

func (r *mdRecorder) SetTrailer(md metadata.MD) error {
	if err := r.ServerTransportStream.SetTrailer(md); err != nil {
		return err
	}
	r.keepTrailer(md)
	return nil
}

func (r *mdRecorder) keepHeader(md metadata.MD) {
	r.mu.Lock()
	r.header = metadata.Join(r.header, md)
	r.mu.Unlock()
}

func (r *mdRecorder) keepTrailer(md metadata.MD) {
	r.mu.Lock()
	r.trailer = metadata.Join(r.trailer, md)
	r.mu.Unlock()
}

// addTo stores the recorded metadata in res (nil: not stored anyway).
func (r *mdRecorder) addTo(res *idemv1.Result) *idemv1.Result {
	if r == nil || res == nil {
		return res
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, md := range map[string]metadata.MD{metaHeader: r.header, metaTrailer: r.trailer} {
		if len(md) == 0 {
			continue
		}
		if res.Metadata == nil {
			res.Metadata = map[string]string{}
		}
		res.Metadata[k] = encodeMD(md)
	}
	return res
}

// encodeMD is md as JSON (keys sorted, so a repeated Complete sends the
// same result), binary values in base64 as stored strings must be UTF-8.
func encodeMD(md metadata.MD) string {
	out := make(map[string][]string, len(md))
	for k, vs := range md {
		if strings.HasSuffix(k, "-bin") {
			enc := make([]string, len(vs))
			for i, v := range vs {
				enc[i] = base64.StdEncoding.EncodeToString([]byte(v))
			}
			vs = enc
		}
		out[k] = vs
	}
	b, _ := json.Marshal(out)
	return string(b)
}

func decodeMD(s string) (metadata.MD, bool) {
	var in map[string][]string
	if json.Unmarshal([]byte(s), &in) != nil {
		return nil, false
	}
	md := metadata.MD{}
	for k, vs := range in {
		if strings.HasSuffix(k, "-bin") {
			for i, v := range vs {
				b, err := base64.StdEncoding.DecodeString(v)
				if err != nil {
					return nil, false
				}
				vs[i] = string(b)
			}
		}
		md[k] = vs
	}
	return md, true
}

// replayMetadata sets the stored header (with idempotency-replayed) and
// trailer on ctx's call.
func replayMetadata(ctx context.Context, r *idemv1.Result) {
	hdr, tlr := storedMetadata(r)
	_ = grpc.SetHeader(ctx, hdr)
	if tlr != nil {
		_ = grpc.SetTrailer(ctx, tlr)
	}
}

// storedMetadata is the header a replay answers with (the stored one, if
// any, with idempotency-replayed) and the stored trailer (nil if none:
// records stored before metadata was kept have neither).
func storedMetadata(r *idemv1.Result) (hdr, tlr metadata.MD) {
	hdr = replayedHeader()
	if md, ok := decodeMD(r.GetMetadata()[metaHeader]); ok {
		hdr = metadata.Join(md, hdr)
	}
	if md, ok := decodeMD(r.GetMetadata()[metaTrailer]); ok {
		tlr = md
	}
	return hdr, tlr
}
