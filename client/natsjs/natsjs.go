package natsjs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/idemhq/idem"
	"github.com/idemhq/idem/client/consumer"
)

// Option configures a Consumer.
type Option func(*options)

type options struct {
	namespace   string
	msgID       func(jetstream.Msg) (string, error)
	fingerprint func(jetstream.Msg) []byte
	batch       int
	fetchWait   time.Duration
	nakDelay    time.Duration
	observe     func(jetstream.Msg, consumer.Result)
}

// maxHold is the longest pause between the tries of a batch idem did not
// answer for.
const maxHold = 30 * time.Second

func defaultOptions() options {
	return options{msgID: DefaultMessageID, batch: 100, fetchWait: time.Second, nakDelay: time.Second}
}

// WithNamespace sets the idem namespace of the messages (default: the
// JetStream consumer's durable name, or its name). Replays through a new
// consumer must use the same namespace to be recognised.
func WithNamespace(ns string) Option { return func(o *options) { o.namespace = ns } }

// WithMessageID sets how a message's idem key is derived (default
// DefaultMessageID).
func WithMessageID(f func(jetstream.Msg) (string, error)) Option {
	return func(o *options) { o.msgID = f }
}

// WithFingerprint sets the fingerprint of a message, e.g. a hash of its
// data, so that a message id reused for another payload is reported as a
// mismatch instead of skipped (default: none).
func WithFingerprint(f func(jetstream.Msg) []byte) Option {
	return func(o *options) { o.fingerprint = f }
}

// WithBatch sets how many messages one fetch asks for (default 100, at most
// consumer.MaxBatch) and how long it waits for them (default 1s).
func WithBatch(n int, wait time.Duration) Option {
	return func(o *options) { o.batch, o.fetchWait = min(n, consumer.MaxBatch), wait }
}

// WithNakDelay sets the redelivery delay of messages whose handler failed
// or whose outcome idem could not record (default 1s), and the first pause
// before a batch idem did not answer for is tried again.
func WithNakDelay(d time.Duration) Option { return func(o *options) { o.nakDelay = d } }

// WithObserver calls f with every message's result before it is acked,
// nak'ed or terminated (for logs and metrics); a message whose id cannot be
// derived is reported Invalid.
func WithObserver(f func(jetstream.Msg, consumer.Result)) Option {
	return func(o *options) { o.observe = f }
}

// DefaultMessageID is the Nats-Msg-Id header or, without one,
// "<stream>:<stream sequence>".
func DefaultMessageID(m jetstream.Msg) (string, error) {
	if id := m.Headers().Get(jetstream.MsgIDHeader); id != "" {
		return id, nil
	}
	md, err := m.Metadata()
	if err != nil {
		return "", fmt.Errorf("idem: natsjs: message has no Nats-Msg-Id and no metadata: %w", err)
	}
	return fmt.Sprintf("%s:%d", md.Stream, md.Sequence.Stream), nil
}

// Consumer runs a handler over a JetStream pull consumer.
type Consumer struct {
	idem     *consumer.Consumer
	js       jetstream.Consumer
	o        options
	progress time.Duration // how often a batch in hand is marked in progress
}

// New returns a Consumer reading from js and deduping with idem.
func New(idem *consumer.Consumer, js jetstream.Consumer, opts ...Option) *Consumer {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if o.batch <= 0 {
		o.batch = 1
	}
	ackWait := 30 * time.Second // JetStream's default
	if info := js.CachedInfo(); info != nil {
		if o.namespace == "" {
			o.namespace = info.Config.Durable
			if o.namespace == "" {
				o.namespace = info.Name
			}
		}
		if info.Config.AckWait > 0 {
			ackWait = info.Config.AckWait
		}
		for _, b := range info.Config.BackOff {
			ackWait = min(ackWait, b)
		}
	}
	return &Consumer{idem: idem, js: js, o: o, progress: max(ackWait/2, time.Millisecond)}
}

// Run fetches and handles messages until ctx ends, then returns ctx's error
// (or the first fetch error it cannot go on from, such as the consumer
// deleted or the connection closed; a pull ended by a NATS node shutting
// down or the consumer's leader moving is not one. Or at once an error when
// there is no namespace: neither WithNamespace nor the consumer's name gave
// one, or when the consumer's ack policy is not AckExplicitPolicy; or when
// idem refuses a batch for good: a credential it does not accept, a
// namespace outside its limits; or when the consumer was deleted, which it
// asks JetStream after each pull that brought nothing). While idem does not
// answer for a batch, the batch is held in progress and tried again, from
// the nak delay doubling up to 30s, so that an outage spends
// none of the messages' deliveries (Stats().Errors counts the tries). A
// batch in hand when ctx ends is left unacknowledged: the work already done
// is recorded in idem, and JetStream's redelivery after AckWait is
// recognised as duplicate.
func (c *Consumer) Run(ctx context.Context, handler func(ctx context.Context, msg jetstream.Msg) error) error {
	if c.o.namespace == "" {
		// Every message would fail its Reserve and be nak'ed, for ever (or
		// dropped, on a consumer without acks such as an ordered one).
		return errors.New("idem: natsjs: no namespace: the consumer has no durable name or name yet (an ordered consumer); use WithNamespace")
	}
	if info := c.js.CachedInfo(); info != nil && info.Config.AckPolicy != jetstream.AckExplicitPolicy {
		// A failed or in-flight message is nak'ed and the next one acked:
		// under AckAll that ack covers the nak'ed one too, and under
		// AckNone nothing is redelivered. Either way it would be lost.
		return fmt.Errorf("idem: natsjs: the consumer's ack policy is %v: use jetstream.AckExplicitPolicy, or failed messages are lost", info.Config.AckPolicy)
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := c.fetchAndHandle(ctx, handler); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
	}
}

func (c *Consumer) fetchAndHandle(ctx context.Context, handler func(context.Context, jetstream.Msg) error) error {
	fctx, cancel := context.WithTimeout(ctx, c.o.fetchWait)
	defer cancel()
	batch, err := c.js.Fetch(c.o.batch, jetstream.FetchContext(fctx))
	if err != nil {
		return fmt.Errorf("idem: natsjs: fetch: %w", err)
	}
	// A message's AckWait runs from its delivery, which may come early in a
	// fetch that then waits for more: kept in progress from then on, or a
	// fetch waiting past AckWait would see it redelivered beside itself.
	// Deferred so that a panicking handler does not keep its batch in
	// progress for good.
	var hand inHand
	defer c.keepInProgress(&hand)()
	var msgs []consumer.Message
	for m := range batch.Messages() {
		id, err := c.o.msgID(m)
		if err != nil {
			// Without an id the message cannot be deduped; leave it to the
			// dead-letter policy instead of running it unguarded.
			c.settle(m, consumer.Result{Outcome: consumer.Invalid, Err: fmt.Errorf("idem: natsjs: message id: %w", err)})
			continue
		}
		var fp []byte
		if c.o.fingerprint != nil {
			fp = c.o.fingerprint(m)
		}
		msgs = append(msgs, consumer.Message{ID: id, Fingerprint: fp, Value: m})
		hand.add(m)
	}
	if err := batch.Error(); err != nil && ctx.Err() == nil {
		if !endsPullOnly(err) {
			return fmt.Errorf("idem: natsjs: fetch: %w", err)
		}
		if len(msgs) == 0 && fctx.Err() == nil {
			// A status ended the pull before its wait: should the next
			// pull end the same way at once, Run would spin against
			// NATS, so it pulls no faster than an empty fetch does.
			<-fctx.Done()
		}
	}
	if len(msgs) == 0 {
		// A consumer deleted between pulls is not told to the next pull,
		// which just waits out its time: without asking, Run would poll a
		// consumer that is gone for ever.
		if _, err := c.js.Info(ctx); errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("idem: natsjs: the consumer is gone: %w", err)
		}
		return nil
	}
	results, err := func() ([]consumer.Result, error) {
		defer hand.stop() // settled below: no longer in progress
		for wait := max(c.o.nakDelay, time.Millisecond); ; wait = min(2*wait, max(c.o.nakDelay, maxHold)) {
			r, err := c.idem.HandleEach(ctx, c.o.namespace, msgs, func(ctx context.Context, m consumer.Message) error {
				if err := ctx.Err(); err != nil {
					return err // stopping: release instead of starting new work
				}
				return handler(ctx, m.Value.(jetstream.Msg))
			})
			if err == nil {
				return r, nil
			}
			if refusedForGood(err) {
				// No retry gets past a refused credential or namespace:
				// the operator must fix the consumer's configuration.
				return nil, fmt.Errorf("idem: natsjs: idem refuses the batch: %w", err)
			}
			// idem did not answer for the batch: nothing of it was reserved
			// or run. Nak'ed, each try would spend a delivery of every
			// message (MaxDeliver would drop the backlog within seconds of
			// an outage); held in progress, they spend none.
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return r, nil
			case <-t.C:
			}
		}
	}()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		return err
	}
	for i, r := range results {
		c.settle(msgs[i].Value.(jetstream.Msg), r)
	}
	return nil
}

// refusedForGood reports whether idem refused a whole batch for a reason
// no retry changes.
func refusedForGood(err error) bool {
	return errors.Is(err, idem.ErrInvalidArgument) || errors.Is(err, idem.ErrPermissionDenied) ||
		errors.Is(err, idem.ErrUnauthenticated)
}

// endsPullOnly reports whether a fetch ended with err is simply over: its
// messages are good and the next fetch may go on. Besides the end of the
// wait, these are the statuses nats.go's own Consume reports and goes on
// from (a NATS node restarting, the consumer's leader moving): stopping Run
// on one would stop the consumer for good at every rolling upgrade.
func endsPullOnly(err error) bool {
	for _, e := range []error{
		context.DeadlineExceeded, jetstream.ErrNoMessages,
		jetstream.ErrConsumerLeadershipChanged, jetstream.ErrServerShutdown,
		jetstream.ErrNoHeartbeat, jetstream.ErrPinIDMismatch,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// inHand is the messages of a fetch not yet settled.
type inHand struct {
	mu      sync.Mutex
	msgs    []jetstream.Msg
	stopped bool
}

func (h *inHand) add(m jetstream.Msg) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, m)
}

// stop ends the marking: the messages are about to be settled, and a mark
// after an ack or nak would only be refused.
func (h *inHand) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
}

// inProgress marks every message in hand in progress.
func (h *inHand) inProgress() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return
	}
	for _, m := range h.msgs {
		_ = m.InProgress()
	}
}

// keepInProgress marks the messages in hand in progress every half AckWait
// until the returned stop is called, as the idem heartbeat extends their
// leases: otherwise a batch that outlives AckWait is redelivered while it
// runs, and each redelivery found in flight spends one of MaxDeliver,
// leaving a later failure none.
func (c *Consumer) keepInProgress(h *inHand) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(c.progress)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			h.inProgress()
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// settle acks or naks one message after idem recorded its outcome.
func (c *Consumer) settle(m jetstream.Msg, r consumer.Result) {
	if c.o.observe != nil {
		c.o.observe(m, r)
	}
	switch {
	case r.Outcome == consumer.InFlight:
		// Nak'ed whatever the InFlightPolicy: JetStream acks by stream
		// sequence, so acking a redelivery would ack the holder's delivery
		// too, and nothing would redeliver it if the holder fails or dies.
		d := r.RetryAfter
		if d <= 0 {
			d = c.o.nakDelay
		}
		_ = m.NakWithDelay(d)
	case r.Ack():
		_ = m.Ack()
	case r.Outcome == consumer.Mismatch, r.Outcome == consumer.Invalid:
		// Redelivery cannot help; the dead-letter policy takes it.
		_ = m.TermWithReason(r.Err.Error())
	default:
		_ = m.NakWithDelay(c.o.nakDelay)
	}
}
