package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/idemhq/idem"
	"github.com/idemhq/idem/client"
	"github.com/idemhq/idem/internal/keyhash"
	"github.com/idemhq/idem/internal/textcut"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// Outcome is what happened to one message.
type Outcome int

const (
	// Processed: the handler ran and succeeded; the record is COMPLETED.
	Processed Outcome = iota + 1
	// Duplicate: the message was completed before; the handler did not run.
	Duplicate
	// InFlight: another attempt holds the message right now; the handler
	// did not run.
	InFlight
	// Released: the handler failed transiently; the record was released so
	// that a redelivery runs it again.
	Released
	// Failed: the handler failed permanently (see Permanent); the failure is
	// recorded as the message's result and the message is done.
	Failed
	// Mismatch: the message id was used before with a different fingerprint.
	Mismatch
	// Errored: idem could not be asked or could not record the outcome.
	Errored
	// Invalid: idem refused the message's id or fingerprint (too long, not
	// printable UTF-8, ...); the handler did not run, and no redelivery can
	// change that. Adapters stop (kafka) or terminate the message (natsjs)
	// rather than retry it forever; give ids idem accepts (WithMessageID).
	Invalid
)

func (o Outcome) String() string {
	switch o {
	case Processed:
		return "processed"
	case Duplicate:
		return "duplicate"
	case InFlight:
		return "in-flight"
	case Released:
		return "released"
	case Failed:
		return "failed"
	case Mismatch:
		return "mismatch"
	case Errored:
		return "errored"
	case Invalid:
		return "invalid"
	}
	return "unknown"
}

// Result is the answer for one message.
type Result struct {
	Outcome Outcome
	// Token is the fencing token the handler ran with (0 when it did not run).
	Token uint64
	// Err is nil exactly when the message may be acknowledged; it is the
	// error Handle returns.
	Err error
	// RetryAfter suggests when to redeliver an InFlight message: about when
	// the current holder's lease ends.
	RetryAfter time.Duration
}

// Ack reports whether the broker may forget the message.
func (r Result) Ack() bool { return r.Err == nil }

var (
	// ErrInFlight: another attempt holds the message; redeliver it later
	// (after Result.RetryAfter). Adapters map it to a delayed nak.
	ErrInFlight = errors.New("idem: consumer: message is being processed by another attempt")
	// ErrMismatch: the message id was already used for a different payload.
	// Redelivering will not help; adapters terminate or skip the message.
	ErrMismatch = errors.New("idem: consumer: message id reused with a different fingerprint")
	// ErrInvalidMessage: idem refused the message's id or fingerprint.
	// Redelivering will not help.
	ErrInvalidMessage = errors.New("idem: consumer: idem refuses this message's id or fingerprint")
)

// InFlightPolicy says what to do with a message another attempt holds.
type InFlightPolicy int

const (
	// NackForLater returns ErrInFlight so the broker redelivers the message
	// after the holder's lease; if the holder fails, the message is not lost.
	NackForLater InFlightPolicy = iota
	// SkipAndAck acknowledges the message: the holder has its own delivery
	// that the broker will redeliver if the holder fails. Right only when
	// the duplicate is a distinct broker message (the same command
	// published twice, or read from two queues); a redelivery of the same
	// message is acked with the holder's, so the kafka and natsjs adapters
	// retry an in-flight message whatever this policy says.
	SkipAndAck
)

type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// Permanent marks a handler error as final: the message is completed with the
// error recorded as its result, acknowledged, and never run again.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// Stats are live counters of one Consumer, safe to read at any time.
type Stats struct {
	Processed  atomic.Int64 // handler ran and the message completed
	Duplicates atomic.Int64 // already completed: acknowledged and skipped
	InFlight   atomic.Int64 // held by another attempt
	Released   atomic.Int64 // handler failed transiently; released for redelivery
	Failed     atomic.Int64 // handler failed permanently; completed with the error
	Mismatches atomic.Int64 // id reused with a different fingerprint
	Errors     atomic.Int64 // idem unreachable or the outcome not recorded
	Invalid    atomic.Int64 // id or fingerprint refused by idem
}

func (s *Stats) count(o Outcome) {
	switch o {
	case Processed:
		s.Processed.Add(1)
	case Duplicate:
		s.Duplicates.Add(1)
	case InFlight:
		s.InFlight.Add(1)
	case Released:
		s.Released.Add(1)
	case Failed:
		s.Failed.Add(1)
	case Mismatch:
		s.Mismatches.Add(1)
	case Errored:
		s.Errors.Add(1)
	case Invalid:
		s.Invalid.Add(1)
	}
}

// Option configures a Consumer.
type Option func(*options)

type options struct {
	tenant        string
	namespace     string
	lease         time.Duration
	retention     time.Duration
	wait          time.Duration
	heartbeat     time.Duration
	noHeartbeat   bool
	inFlight      InFlightPolicy
	permanent     func(error) bool
	clock         clockwork.Clock
	finishTimeout time.Duration
	minRetry      time.Duration
}

func defaultOptions() options {
	return options{
		lease:         30 * time.Second,
		clock:         clockwork.NewRealClock(),
		finishTimeout: 10 * time.Second,
		minRetry:      time.Second,
	}
}

// WithTenant sets the tenant of every record (when the server does not take
// it from credentials).
func WithTenant(t string) Option { return func(o *options) { o.tenant = t } }

// WithNamespace sets the namespace used when Handle is given an empty one.
// Use one namespace per consumer group: two groups that each must see every
// message must not dedupe against each other.
func WithNamespace(ns string) Option { return func(o *options) { o.namespace = ns } }

// WithLease sizes the lease to the processing budget of one message (or one
// batch): another attempt can take the message over only after it ends.
// Default 30s, also for zero or less.
func WithLease(d time.Duration) Option { return func(o *options) { o.lease = d } }

// WithRetention sets how long a completed message is remembered, i.e. the
// window in which a redelivery or replay is recognised; it should exceed the
// broker's retention of replayable messages. Zero means the server default.
func WithRetention(d time.Duration) Option { return func(o *options) { o.retention = d } }

// WithWait lets Reserve wait up to d for an in-flight holder to finish before
// answering, so a redelivery racing its original resolves without a nak.
func WithWait(d time.Duration) Option { return func(o *options) { o.wait = d } }

// WithHeartbeat extends the lease every d while the handler runs (default:
// half the lease), so a slow handler is not taken over.
func WithHeartbeat(d time.Duration) Option { return func(o *options) { o.heartbeat = d } }

// WithoutHeartbeat turns lease extension off: a handler that outlives its
// lease may be taken over.
func WithoutHeartbeat() Option { return func(o *options) { o.noHeartbeat = true } }

// WithInFlightPolicy chooses what happens to a message another attempt holds
// (default NackForLater).
func WithInFlightPolicy(p InFlightPolicy) Option { return func(o *options) { o.inFlight = p } }

// WithPermanentErrors classifies handler errors: f returns true for errors
// that are final and should be recorded instead of retried. Errors wrapped
// with Permanent are always final; by default all others are transient.
// f is not asked once the caller's ctx has ended, or a lease of the batch
// was lost (which cancels the handler's context): the handler stopped with
// its work unfinished, so its error is transient (Permanent still counts).
// HandleEach asks f as each message's handler returns: an error judged
// final then stays final when the batch is stopped later.
func WithPermanentErrors(f func(error) bool) Option { return func(o *options) { o.permanent = f } }

// WithClock sets the clock of the heartbeat (tests use a fake one).
func WithClock(c clockwork.Clock) Option { return func(o *options) { o.clock = c } }

// WithFinishTimeout bounds Complete and Release, which run even after the
// caller's context ended so that finished work is recorded (default 10s).
func WithFinishTimeout(d time.Duration) Option { return func(o *options) { o.finishTimeout = d } }

// Consumer dedupes messages through idem. It is safe for concurrent use.
type Consumer struct {
	svc   client.Service
	o     options
	stats Stats
}

// New returns a Consumer that keeps its ledger in svc (a *client.Client, or
// client.Local for an in-process idem).
func New(svc client.Service, opts ...Option) *Consumer {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if o.lease <= 0 {
		// Else the heartbeat would be off under the server's default lease.
		o.lease = defaultOptions().lease
	}
	if o.heartbeat <= 0 {
		o.heartbeat = o.lease / 2
	}
	return &Consumer{svc: svc, o: o}
}

// Stats returns the consumer's live counters.
func (c *Consumer) Stats() *Stats { return &c.stats }

func (c *Consumer) namespace(ns string) (string, error) {
	if ns == "" {
		ns = c.o.namespace
	}
	if ns == "" {
		return "", errors.New("idem: consumer: no namespace (pass one or use WithNamespace)")
	}
	return ns, nil
}

func dur(d time.Duration) *durationpb.Duration {
	if d <= 0 {
		return nil
	}
	return durationpb.New(d)
}

// Handle processes one message at most once per namespace: see the package
// documentation. The error is nil exactly when the message may be
// acknowledged; it wraps ErrInFlight, ErrMismatch, the handler's transient
// error, or idem's error.
func (c *Consumer) Handle(ctx context.Context, namespace, msgID string, fingerprint []byte, fn func(ctx context.Context) error) (Result, error) {
	r := c.handle(ctx, namespace, msgID, fingerprint, fn)
	c.stats.count(r.Outcome)
	return r, r.Err
}

func (c *Consumer) handle(ctx context.Context, namespace, msgID string, fingerprint []byte, fn func(ctx context.Context) error) Result {
	ns, err := c.namespace(namespace)
	if err != nil {
		return Result{Outcome: Errored, Err: err}
	}
	resp, err := c.svc.Reserve(ctx, &idemv1.ReserveRequest{
		Tenant: c.o.tenant, Namespace: ns, Key: msgID, Fingerprint: fingerprint,
		LeaseTtl: dur(c.o.lease), Retention: dur(c.o.retention), Wait: dur(c.o.wait),
	})
	if err != nil {
		if refusesMessage(err) {
			return Result{Outcome: Invalid, Err: fmt.Errorf("%w: %s: %w", ErrInvalidMessage, msgRef(ns, msgID), err)}
		}
		return Result{Outcome: Errored, Err: fmt.Errorf("idem: consumer: reserve %s: %w", msgRef(ns, msgID), err)}
	}
	switch resp.GetOutcome() {
	case idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED:
		return Result{Outcome: Duplicate}
	case idemv1.ReserveOutcome_RESERVE_OUTCOME_IN_PROGRESS:
		return c.inFlight(resp.GetRecord())
	case idemv1.ReserveOutcome_RESERVE_OUTCOME_MISMATCH:
		return Result{Outcome: Mismatch, Err: fmt.Errorf("%w: %s", ErrMismatch, msgRef(ns, msgID))}
	case idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED:
	default:
		return Result{Outcome: Errored, Err: fmt.Errorf("idem: consumer: reserve %s: unknown outcome %v", msgRef(ns, msgID), resp.GetOutcome())}
	}
	token := resp.GetRecord().GetToken()
	ref := []ref{{ns: ns, key: msgID, token: token}}
	stopped, fnErr := c.run(ctx, ref, func(ctx context.Context) error {
		return fn(client.ContextWithToken(ctx, token))
	})
	fctx, cancel := c.finishContext(ctx)
	defer cancel()
	if fnErr != nil && !c.isPermanent(stopped, fnErr) {
		return c.release(fctx, ref[0], fnErr)
	}
	req := &idemv1.CompleteRequest{
		Tenant: c.o.tenant, Namespace: ns, Key: msgID, Token: token,
		Result: resultOf(fnErr), Retention: dur(c.o.retention),
	}
	_, err = c.svc.Complete(fctx, req)
	if fnErr != nil && errors.Is(err, idem.ErrInvalidArgument) {
		req.Result = codeOnly
		_, err = c.svc.Complete(fctx, req)
	}
	if err != nil {
		return Result{Outcome: Errored, Token: token, Err: fmt.Errorf("idem: consumer: complete %s: %w", msgRef(ns, msgID), err)}
	}
	if fnErr != nil {
		return Result{Outcome: Failed, Token: token}
	}
	return Result{Outcome: Processed, Token: token}
}

// isPermanent classifies a handler's error; stopped says whether the
// handler's context had ended when it returned.
func (c *Consumer) isPermanent(stopped bool, err error) bool {
	if err == errNotRun || err == errStopped || err == errHeldBack || err == errPanicked || errors.Is(err, errBadCount) {
		// Ours, not the handler's: a classifier that deems every unknown
		// error final must not complete messages that never ran.
		return false
	}
	if IsPermanent(err) {
		return true
	}
	if stopped {
		// The caller stopped (shutdown, rebalance), or a lease of the batch
		// was lost, while the handler ran: whatever it returned — ctx's
		// error, its cause, a downstream call's CANCELED — its work is
		// unfinished, not failed for good.
		return false
	}
	return c.o.permanent != nil && c.o.permanent(err)
}

// maxErrorText bounds the error text a permanent failure's record keeps:
// enough to tell what failed, and far from idemd's result limit and the
// size of request it reads (a 5 MiB text would fail its Complete in
// transport, leaving the message to run again).
const maxErrorText = 4 << 10

// resultOf is what a message's record keeps: nothing for success, the error
// text (code UNKNOWN) for a permanent failure.
func resultOf(err error) *idemv1.Result {
	if err == nil {
		return &idemv1.Result{}
	}
	// idem stores only UTF-8; a refused Complete would leave the message to
	// be redelivered and run again.
	msg := strings.ToValidUTF8(err.Error(), "\uFFFD")
	if len(msg) > maxErrorText {
		msg = textcut.Prefix(msg, maxErrorText) + "…"
	}
	return &idemv1.Result{Code: 2, Message: msg}
}

// codeOnly records a permanent failure whose text the namespace refuses
// (its result limit): refused, the Complete would leave the message to run
// again once its lease lapsed.
var codeOnly = &idemv1.Result{Code: 2}

// finishContext outlives the caller's cancellation: work that finished must
// be recorded, or a redelivery would run it again after the lease.
func (c *Consumer) finishContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), c.o.finishTimeout)
}

func (c *Consumer) inFlight(rec *idemv1.Record) Result {
	if c.o.inFlight == SkipAndAck {
		return Result{Outcome: InFlight}
	}
	after := c.o.minRetry
	if exp := rec.GetLeaseExpiresAt(); exp != nil {
		// The store's clock, read with ours: clamp so skew cannot make the
		// delay absurd.
		after = min(max(exp.AsTime().Sub(c.o.clock.Now()), c.o.minRetry), max(c.o.lease, c.o.minRetry))
	}
	return Result{Outcome: InFlight, Err: ErrInFlight, RetryAfter: after}
}

func (c *Consumer) release(ctx context.Context, r ref, fnErr error) Result {
	_, err := c.svc.Release(ctx, &idemv1.ReleaseRequest{Tenant: c.o.tenant, Namespace: r.ns, Key: r.key, Token: r.token})
	if err != nil && !errors.Is(err, idem.ErrLeaseLost) && !errors.Is(err, idem.ErrNotFound) {
		// The record stays IN_PROGRESS until its lease ends; the redelivery
		// takes over then.
		return Result{Outcome: Errored, Token: r.token, Err: fmt.Errorf("idem: consumer: release %s after handler error (%w): %w", msgRef(r.ns, r.key), fnErr, err)}
	}
	return Result{Outcome: Released, Token: r.token, Err: fmt.Errorf("idem: consumer: handler failed for %s, released for redelivery: %w", msgRef(r.ns, r.key), fnErr)}
}

type ref struct {
	ns, key string
	token   uint64
}

// msgRef names a message in errors, which end up in logs (the adapters'
// observers, a JetStream termination reason): by the hash idemd logs its
// key under, never the id itself, which may carry personal data.
func msgRef(ns, id string) string {
	return fmt.Sprintf("namespace %q %s %s", ns, keyhash.Attr, keyhash.Of(id))
}

// run calls fn while a heartbeat extends the leases of refs. When a lease is
// lost, fn's context is cancelled with cause idem.ErrLeaseLost: another
// attempt owns the message now. When fn panics, the leases are released
// (so a redelivery need not wait for them to end) and the panic goes on.
// stopped reports whether fn's context had ended (ctx, or a lease lost)
// when fn returned: its errors then tell of work cut short.
func (c *Consumer) run(ctx context.Context, refs []ref, fn func(ctx context.Context) error) (stopped bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			fctx, cancel := c.finishContext(ctx)
			defer cancel()
			for _, r := range refs {
				c.release(fctx, r, errors.New("idem: consumer: handler panicked"))
				c.stats.Released.Add(1)
			}
			panic(p)
		}
	}()
	if c.o.noHeartbeat || c.o.heartbeat <= 0 {
		err = fn(ctx)
		return ctx.Err() != nil, err
	}
	hctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	// The heartbeat outlives ctx: fn may still be finishing its work after
	// a shutdown or rebalance ends ctx, and a lapsed lease would let a
	// redelivery elsewhere do it again. It ends when fn returns.
	hbctx, hbcancel := context.WithCancel(context.WithoutCancel(ctx))
	wg.Go(func() { c.heartbeat(hbctx, cancel, refs) })
	defer func() {
		// Deferred so that a panicking fn does not leave the heartbeat running.
		hbcancel()
		wg.Wait()
		cancel(nil)
	}()
	err = fn(hctx)
	stopped = hctx.Err() != nil
	if cause := context.Cause(hctx); err != nil && errors.Is(cause, idem.ErrLeaseLost) {
		return stopped, fmt.Errorf("%w: %w", err, cause)
	}
	return stopped, err
}

func (c *Consumer) heartbeat(ctx context.Context, cancel context.CancelCauseFunc, refs []ref) {
	t := c.o.clock.NewTicker(c.o.heartbeat)
	defer t.Stop()
	// A lost lease cancels fn, but fn may still be working on the other
	// messages of its batch until it returns: their leases are extended
	// all the same, or their redeliveries would run beside it.
	live := slices.Clone(refs)
	for len(live) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
		lost := c.extendAll(ctx, live)
		kept := live[:0]
		for i, r := range live {
			if lost[i] {
				cancel(fmt.Errorf("%w: %s", idem.ErrLeaseLost, msgRef(r.ns, r.key)))
				continue
			}
			// Other errors: the lease still runs; the next tick tries again.
			kept = append(kept, r)
		}
		live = kept
	}
}

// heartbeatCalls is how many ExtendLease calls a batch's heartbeat makes at
// once: one by one, 1,000 leases at 30 ms a call (a slow or distant idem)
// take a whole 30 s lease, and the last ones lapse before their turn.
const heartbeatCalls = 16

// extendAll extends every lease of refs and reports which are lost.
func (c *Consumer) extendAll(ctx context.Context, refs []ref) []bool {
	lost := make([]bool, len(refs))
	sem := make(chan struct{}, heartbeatCalls)
	var wg sync.WaitGroup
	for i, r := range refs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			_, err := c.svc.ExtendLease(ctx, &idemv1.ExtendLeaseRequest{
				Tenant: c.o.tenant, Namespace: r.ns, Key: r.key, Token: r.token, LeaseTtl: dur(c.o.lease),
			})
			lost[i] = errors.Is(err, idem.ErrLeaseLost) || errors.Is(err, idem.ErrNotFound)
		}()
	}
	wg.Wait()
	return lost
}

// refusesMessage reports whether idem refused a Reserve for the message's
// own fields (its id is the key, its payload's hash the fingerprint), not
// for the consumer's configuration (namespace, lease), which every message
// shares and an operator can fix.
func refusesMessage(err error) bool {
	fields := client.BadFields(err)
	return len(fields) > 0 && !slices.ContainsFunc(fields, func(f string) bool { return f != "key" && f != "fingerprint" })
}
