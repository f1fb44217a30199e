package kafka

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemhq/idem/client/consumer"
)

// Option configures a Consumer.
type Option func(*options)

type options struct {
	namespace   string
	msgID       func(*kgo.Record) (string, error)
	fingerprint func(*kgo.Record) []byte
	maxPoll     int
	retryDelay  time.Duration
	observe     func(*kgo.Record, consumer.Result)
	fetchErr    func(topic string, partition int32, err error)
}

func defaultOptions() options {
	return options{msgID: OffsetID, maxPoll: 500, retryDelay: time.Second}
}

// WithNamespace sets the idem namespace (default: the consumer group).
// Replays through another group must use the same namespace to be
// recognised.
func WithNamespace(ns string) Option { return func(o *options) { o.namespace = ns } }

// WithMessageID sets how a record's idem key is derived (default OffsetID).
func WithMessageID(f func(*kgo.Record) (string, error)) Option {
	return func(o *options) { o.msgID = f }
}

// WithHeaderID takes the idem key from a record header (HeaderID).
func WithHeaderID(name string) Option { return WithMessageID(HeaderID(name)) }

// HeaderID returns the id function that reads the header name, falling back
// to OffsetID for records without it.
func HeaderID(name string) func(*kgo.Record) (string, error) {
	return func(r *kgo.Record) (string, error) {
		for _, h := range r.Headers {
			if h.Key == name && len(h.Value) > 0 {
				return string(h.Value), nil
			}
		}
		return OffsetID(r)
	}
}

// WithFingerprint sets the fingerprint of a record, e.g. a hash of its
// value, so that an id reused for another payload is reported as a
// mismatch instead of skipped (default: none).
func WithFingerprint(f func(*kgo.Record) []byte) Option {
	return func(o *options) { o.fingerprint = f }
}

// WithMaxPoll bounds the records handled per poll (default 500, at most
// consumer.MaxBatch): one BatchReserve and one BatchComplete each.
func WithMaxPoll(n int) Option { return func(o *options) { o.maxPoll = min(n, consumer.MaxBatch) } }

// WithRetryDelay sets the pause before a failed record is tried again
// (default 1s). Records another member holds wait about its lease instead.
func WithRetryDelay(d time.Duration) Option { return func(o *options) { o.retryDelay = d } }

// WithObserver calls f with every record's result (for logs and metrics).
func WithObserver(f func(*kgo.Record, consumer.Result)) Option {
	return func(o *options) { o.observe = f }
}

// WithFetchErrorObserver calls f with each fetch error Run consumes past:
// those franz-go reports for information and recovers from by itself,
// *kgo.ErrGroupSession (the member was kicked from the group or could not
// join it; the client rejoins) and *kgo.ErrDataLoss (the broker lost
// records; the client reset to a valid offset). Log or alert on them; to
// stop instead, cancel Run's context from f. Other fetch errors stop Run.
// After a data loss, records written again at offsets consumed before
// carry the lost records' OffsetIDs and are skipped as duplicates;
// producer-assigned ids (WithHeaderID) do not collide so.
func WithFetchErrorObserver(f func(topic string, partition int32, err error)) Option {
	return func(o *options) { o.fetchErr = f }
}

// OffsetID is "<topic>/<partition>/<offset>".
func OffsetID(r *kgo.Record) (string, error) {
	return fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset), nil
}

// Consumer runs a handler over a franz-go group consumer.
type Consumer struct {
	idem  *consumer.Consumer
	cl    *kgo.Client
	o     options
	group bool
}

// New returns a Consumer reading with cl and deduping with idem. A group
// consumer must have auto-commit disabled. Without a group (partitions
// consumed directly, e.g. to replay a topic from the start) nothing is
// committed and WithNamespace is required.
func New(idem *consumer.Consumer, cl *kgo.Client, opts ...Option) (*Consumer, error) {
	group, _ := cl.OptValue(kgo.ConsumerGroup).(string)
	if v, _ := cl.OptValue(kgo.DisableAutoCommit).(bool); group != "" && !v {
		return nil, errors.New("idem: kafka: the client must be created with kgo.DisableAutoCommit()")
	}
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if o.maxPoll <= 0 {
		o.maxPoll = 1
	}
	if o.namespace == "" {
		o.namespace = group
	}
	if o.namespace == "" {
		return nil, errors.New("idem: kafka: no namespace: use a consumer group or WithNamespace")
	}
	return &Consumer{idem: idem, cl: cl, o: o, group: group != ""}, nil
}

// Run polls and handles records until ctx ends, then returns ctx's error
// (or a fetch error that needs the operator, see WithFetchErrorObserver, or
// the error of a record whose message id cannot be derived or that idem
// refuses, which no retry would get past). Offsets are committed after each
// poll's outcomes are recorded; a poll in hand when ctx ends is not committed, so
// its records come back to the group and are recognised as duplicates.
func (c *Consumer) Run(ctx context.Context, handler func(ctx context.Context, r *kgo.Record) error) error {
	// A stopped Run must not hold the group's rebalance (BlockRebalanceOnPoll):
	// its uncommitted records go to whichever member gets the partitions.
	defer c.cl.AllowRebalance()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		fetches := c.cl.PollRecords(ctx, c.o.maxPoll)
		if fetches.IsClientClosed() {
			return errors.New("idem: kafka: client closed")
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		var fatal error
		fetches.EachError(func(topic string, p int32, err error) {
			switch {
			case errors.Is(err, context.Canceled):
			case informational(err):
				if c.o.fetchErr != nil {
					c.o.fetchErr(topic, p, err)
				}
			case fatal == nil:
				// Retriable errors are retried inside kgo; what surfaces
				// here (unknown topic, authorization, a corrupt or too large
				// batch, which kgo stops fetching at) needs the operator.
				fatal = fmt.Errorf("idem: kafka: fetch %s/%d: %w", topic, p, err)
			}
		})
		if fatal != nil {
			return fatal
		}
		recs := fetches.Records()
		if len(recs) > 0 {
			if err := c.handle(ctx, recs, handler); err != nil {
				return err
			}
			if !c.group {
				// Without a group there is nothing to commit: the caller
				// chose the offsets (e.g. an operator's replay).
			} else if err := c.cl.CommitRecords(ctx, recs...); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				// A failed commit (e.g. the partitions were revoked) only means
				// redelivery, which idem recognises.
			}
		}
		c.cl.AllowRebalance()
	}
}

// informational reports whether kgo recovers from a fetch error by itself,
// as its documentation of Fetches.Errors says: stopping Run on one would
// leave the group for a session blip (a rebalance held past its timeout by
// a slow poll, a coordinator moving) or for records already gone.
func informational(err error) bool {
	_, session := errors.AsType[*kgo.ErrGroupSession](err)
	_, loss := errors.AsType[*kgo.ErrDataLoss](err)
	return session || loss
}

// handle runs one poll until every record is done: handled, duplicate,
// permanently failed or mismatched. Failed ones are retried in place.
func (c *Consumer) handle(ctx context.Context, recs []*kgo.Record, handler func(context.Context, *kgo.Record) error) error {
	msgs := make([]consumer.Message, 0, len(recs))
	for _, r := range recs {
		id, err := c.o.msgID(r)
		if err != nil {
			return fmt.Errorf("idem: kafka: message id of %s/%d/%d: %w", r.Topic, r.Partition, r.Offset, err)
		}
		var fp []byte
		if c.o.fingerprint != nil {
			fp = c.o.fingerprint(r)
		}
		// Ordered per partition: a record to be tried again holds back
		// the later ones of its partition, which then wait behind it.
		msgs = append(msgs, consumer.Message{ID: id, Fingerprint: fp, Value: r, OrderKey: fmt.Sprintf("%s/%d", r.Topic, r.Partition)})
	}
	for len(msgs) > 0 {
		// HandleEach starts no record once ctx ended: they are released.
		results, _ := c.idem.HandleEach(ctx, c.o.namespace, msgs, func(ctx context.Context, m consumer.Message) error {
			return handler(ctx, m.Value.(*kgo.Record))
		})
		if err := ctx.Err(); err != nil {
			// The records handled before ctx ended are recorded in idem;
			// the observer hears of them as of any other.
			if c.o.observe != nil {
				for i, r := range results {
					c.o.observe(msgs[i].Value.(*kgo.Record), r)
				}
			}
			return err
		}
		var again []consumer.Message
		wait := time.Duration(-1)
		for i, r := range results {
			if c.o.observe != nil {
				c.o.observe(msgs[i].Value.(*kgo.Record), r)
			}
			if r.Outcome == consumer.Invalid {
				// As for an id that cannot be derived: retrying would stall
				// the partition for good, skipping would lose the record.
				rec := msgs[i].Value.(*kgo.Record)
				return fmt.Errorf("idem: kafka: record %s/%d/%d: %w", rec.Topic, rec.Partition, rec.Offset, r.Err)
			}
			// In flight is retried whatever the InFlightPolicy: Kafka cannot
			// redeliver one record, so committing past it would lose it if
			// the holder dies or fails.
			if (r.Ack() && r.Outcome != consumer.InFlight) || r.Outcome == consumer.Mismatch {
				continue
			}
			again = append(again, msgs[i])
			d := c.o.retryDelay
			if r.Outcome == consumer.InFlight && r.RetryAfter > 0 {
				d = r.RetryAfter
			}
			if wait < 0 || d < wait {
				wait = d
			}
		}
		msgs = again
		if len(msgs) == 0 {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
