package consumer

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"

	"github.com/idemhq/idem"
	"github.com/idemhq/idem/client"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// MaxBatch is the largest batch idem takes in one round trip; HandleBatch
// splits longer slices.
const MaxBatch = 1000

// Message is one message of a batch.
type Message struct {
	ID          string
	Fingerprint []byte
	// Value carries the broker's message to the handler untouched.
	Value any
	// Token is the fencing token of this message's attempt; HandleBatch sets
	// it on the messages it passes to the handler.
	Token uint64
	// OrderKey, when set, orders HandleEach's messages that share it (a
	// Kafka partition): once one of them is not done (held by another
	// attempt, failed transiently, not answered for by idem), the later
	// ones of the batch are not run but released, to be tried after it.
	OrderKey string

	held bool // an earlier message with its OrderKey is not done
}

// HandleBatch processes msgs like Handle does one message, with one
// BatchReserve and one BatchComplete round trip per MaxBatch messages. Only
// the messages reserved now reach fn, in their order; fn returns one error
// per message it was given (nil, a transient error, or a Permanent one).
// Results are in the order of msgs; the error is set only when the whole
// batch failed (idem unreachable), and then every result carries it. A
// message id repeated inside the batch is handled once; its repeats are
// duplicates; a repeat with another payload is a Mismatch, unless the
// record holds a payload other than the first occurrence's, which may be
// the repeat's: such repeats are reserved after the rest, in a batch of
// their own (fn may then be called again).
func (c *Consumer) HandleBatch(ctx context.Context, namespace string, msgs []Message, fn func(ctx context.Context, batch []Message) []error) ([]Result, error) {
	results := make([]Result, len(msgs))
	ns, err := c.namespace(namespace)
	var firstErr error
	// Order keys with a message not done in an earlier round trip: their
	// later messages are held back in the next ones too.
	var blocked map[string]bool
	for start := 0; start < len(msgs) && err == nil; start += MaxBatch {
		end := min(start+MaxBatch, len(msgs))
		if berr := c.batch(ctx, ns, msgs[start:end], results[start:end], fn, blocked); berr != nil && firstErr == nil {
			firstErr = berr
		}
		for i := start; i < end; i++ {
			if k := msgs[i].OrderKey; k != "" && !done(results[i].Outcome) {
				if blocked == nil {
					blocked = map[string]bool{}
				}
				blocked[k] = true
			}
		}
	}
	if err != nil {
		for i := range results {
			results[i] = Result{Outcome: Errored, Err: err}
		}
		firstErr = err
	}
	for _, r := range results {
		c.stats.count(r.Outcome)
	}
	return results, firstErr
}

var (
	errPanicked = errors.New("idem: consumer: handler panicked")
	// errBadCount: the batch handler did not say which messages it handled.
	errBadCount = errors.New("idem: consumer: batch handler returned the wrong number of errors")
	// errNotRun: HandleEach did not hand the message to fn because an
	// earlier one panicked; it is released, for the redelivery.
	errNotRun = errors.New("idem: consumer: not run: the handler of an earlier message of the batch panicked")
	// errStopped: HandleEach did not start the message because the batch's
	// context ended (shutdown, or a lease of the batch lost); it is
	// released, for the redelivery.
	errStopped = errors.New("idem: consumer: not run: the context ended before the handler started")
	// errHeldBack: HandleEach did not start the message because an earlier
	// one with its OrderKey is not done; it is released, to be tried after.
	errHeldBack = errors.New("idem: consumer: not run: an earlier message with the same order key is not done")
)

// HandleEach is HandleBatch with a handler per message; each call gets the
// message's token in its context, as with Handle. When fn panics, the
// messages it finished before are recorded as usual, that one and the rest
// are released, and then the panic goes on. Once ctx ends (or a lease of
// the batch is lost), fn is not called for the messages left: they are
// released, whatever WithPermanentErrors says. Messages with an OrderKey
// are held back behind an earlier one of theirs that is not done (see
// Message.OrderKey), so that they never take effect before it.
func (c *Consumer) HandleEach(ctx context.Context, namespace string, msgs []Message, fn func(ctx context.Context, m Message) error) ([]Result, error) {
	var (
		panicked bool
		pv       any
	)
	call := func(ctx context.Context, m Message) (err error) {
		defer func() {
			if p := recover(); p != nil {
				// Not the panic's value in the error: results end up in logs.
				panicked, pv, err = true, p, errPanicked
			}
		}()
		return fn(client.ContextWithToken(ctx, m.Token), m)
	}
	results, err := c.HandleBatch(ctx, namespace, msgs, func(ctx context.Context, batch []Message) []error {
		errs := make([]error, len(batch))
		blocked := map[string]bool{} // order keys with a message not done
		for i, m := range batch {
			switch {
			case m.OrderKey != "" && (m.held || blocked[m.OrderKey]):
				// Run now, it would take effect before the earlier one.
				errs[i] = errHeldBack
			case panicked:
				// The handlers before it are done: releasing them with
				// the whole batch would run them again on redelivery.
				errs[i] = errNotRun
			case ctx.Err() != nil:
				// fn would only fail it with ctx's error, which a
				// classifier may deem final: completed, never run.
				errs[i] = errStopped
			default:
				errs[i] = call(ctx, m)
			}
			switch {
			case errs[i] == nil:
			case c.isPermanent(ctx.Err() != nil, errs[i]):
				// Final as judged now, while the batch runs: the later
				// messages of its order key go on, so a stop coming
				// after (shutdown, a lease lost while another message
				// runs) must not make it transient for finishBatch, or
				// it would run again after them on redelivery.
				if !IsPermanent(errs[i]) {
					errs[i] = Permanent(errs[i])
				}
			case m.OrderKey != "":
				blocked[m.OrderKey] = true // released: to be run again
			}
		}
		return errs
	})
	if panicked {
		panic(pv)
	}
	return results, err
}

// done reports whether a message of this outcome no longer holds back the
// later ones of its order key: it will not be tried again.
func done(o Outcome) bool {
	return o == Processed || o == Duplicate || o == Failed || o == Mismatch
}

// batch handles one round trip's messages; blocked holds the order keys
// with a message not done before msgs.
func (c *Consumer) batch(ctx context.Context, ns string, msgs []Message, results []Result, fn func(context.Context, []Message) []error, blocked map[string]bool) error {
	first := make(map[string]int, len(msgs))
	dupOf := make([]int, len(msgs))
	items := make([]*idemv1.BatchReserveRequest_Item, 0, len(msgs))
	uniq := make([]int, 0, len(msgs)) // msgs index of each item
	for i, m := range msgs {
		if j, ok := first[m.ID]; ok {
			dupOf[i] = j
			continue
		}
		first[m.ID] = i
		dupOf[i] = -1
		items = append(items, &idemv1.BatchReserveRequest_Item{Key: m.ID, Fingerprint: m.Fingerprint})
		uniq = append(uniq, i)
	}
	resp, err := c.svc.BatchReserve(ctx, &idemv1.BatchReserveRequest{
		Tenant: c.o.tenant, Namespace: ns, LeaseTtl: dur(c.o.lease), Retention: dur(c.o.retention), Items: items,
	})
	if err == nil && len(resp.GetResults()) != len(items) {
		err = fmt.Errorf("idem: consumer: batch reserve answered %d results for %d items", len(resp.GetResults()), len(items))
	}
	if err != nil {
		err = fmt.Errorf("idem: consumer: batch reserve: %w", err)
		for i := range results {
			results[i] = Result{Outcome: Errored, Err: err}
		}
		return err
	}

	var fresh []Message
	var freshIdx []int
	var refs []ref
	notDone := map[string]bool{} // order keys with a message not done at Reserve
	for k, r := range resp.GetResults() {
		i := uniq[k]
		results[i] = c.reserved(ns, msgs[i].ID, r)
		key := msgs[i].OrderKey
		switch results[i].Outcome {
		case 0: // reserved: for fn
			m := msgs[i]
			m.Token = r.GetRecord().GetToken()
			// Run, it would take effect before an earlier one of its key.
			m.held = key != "" && (notDone[key] || blocked[key])
			fresh = append(fresh, m)
			freshIdx = append(freshIdx, i)
			refs = append(refs, ref{ns: ns, key: m.ID, token: m.Token})
		case InFlight, Errored, Invalid:
			if key != "" {
				notDone[key] = true
			}
		}
	}

	if len(fresh) > 0 {
		var errs []error
		// fn's errors are per message; a lease lost meanwhile shows at
		// Complete. A lease lost cancels fn's context for every message:
		// the errors of those it cut short are not final (stopped).
		stopped, _ := c.run(ctx, refs, func(ctx context.Context) error {
			errs = fn(ctx, fresh)
			return nil
		})
		if len(errs) != len(fresh) {
			bad := fmt.Errorf("%w: %d errors for %d messages", errBadCount, len(errs), len(fresh))
			errs = make([]error, len(fresh))
			for k := range errs {
				errs[k] = bad
			}
		}
		c.finishBatch(ctx, stopped, ns, fresh, freshIdx, errs, results)
	}

	var again []int // repeats idem must be asked about
	for i, j := range dupOf {
		if j < 0 {
			continue
		}
		r := results[j]
		if !bytes.Equal(msgs[i].Fingerprint, msgs[j].Fingerprint) {
			switch {
			case r.Outcome == Mismatch:
				// The record holds a payload other than the first
				// occurrence's, maybe this one's (completed, or in
				// flight elsewhere): a Mismatch here would drop it.
				again = append(again, i)
			case r.Outcome == Errored && r.Token == 0:
				// idem did not answer for the ID: the record may hold
				// this payload, so retry it rather than drop it.
				results[i] = r
			default:
				// The record holds the first occurrence's payload, as a
				// later batch would find it: reported, not acked.
				results[i] = Result{Outcome: Mismatch, Err: fmt.Errorf("%w: %s", ErrMismatch, msgRef(ns, msgs[i].ID))}
			}
			continue
		}
		switch r.Outcome {
		case Processed, Failed, Duplicate:
			results[i] = Result{Outcome: Duplicate}
		default:
			results[i] = r
		}
	}
	if len(again) > 0 {
		// A batch of their own; its repeats are resolved the same way.
		sub := make([]Message, len(again))
		subResults := make([]Result, len(again))
		for k, i := range again {
			sub[k] = msgs[i]
		}
		_ = c.batch(ctx, ns, sub, subResults, fn, blocked) // its failure is in subResults
		for k, i := range again {
			results[i] = subResults[k]
		}
	}
	return nil
}

// reserved is the result of one item of a BatchReserve; the zero Result
// when it was reserved now.
func (c *Consumer) reserved(ns, id string, r *idemv1.BatchReserveResponse_Result) Result {
	if e := r.GetError(); e != nil {
		if codes.Code(e.GetCode()) == codes.InvalidArgument {
			// The batch's own fields were valid (or the whole call
			// would have failed): the item's key or fingerprint is not.
			return Result{Outcome: Invalid, Err: fmt.Errorf("%w: %s: %w", ErrInvalidMessage, msgRef(ns, id), itemError(e))}
		}
		return Result{Outcome: Errored, Err: fmt.Errorf("idem: consumer: reserve %s: %w", msgRef(ns, id), itemError(e))}
	}
	switch r.GetOutcome() {
	case idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED:
		return Result{}
	case idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED:
		return Result{Outcome: Duplicate}
	case idemv1.ReserveOutcome_RESERVE_OUTCOME_IN_PROGRESS:
		return c.inFlight(r.GetRecord())
	case idemv1.ReserveOutcome_RESERVE_OUTCOME_MISMATCH:
		return Result{Outcome: Mismatch, Err: fmt.Errorf("%w: %s", ErrMismatch, msgRef(ns, id))}
	}
	return Result{Outcome: Errored, Err: fmt.Errorf("idem: consumer: reserve %s: unknown outcome %v", msgRef(ns, id), r.GetOutcome())}
}

// finishBatch completes the successes and permanent failures in one round
// trip and releases the transient failures.
func (c *Consumer) finishBatch(ctx context.Context, stopped bool, ns string, fresh []Message, idx []int, errs []error, results []Result) {
	fctx, cancel := c.finishContext(ctx)
	defer cancel()
	var items []*idemv1.BatchCompleteRequest_Item
	var completing []int // index into fresh
	for k, m := range fresh {
		if errs[k] != nil && !c.isPermanent(stopped, errs[k]) {
			results[idx[k]] = c.release(fctx, ref{ns: ns, key: m.ID, token: m.Token}, errs[k])
			continue
		}
		items = append(items, &idemv1.BatchCompleteRequest_Item{Key: m.ID, Token: m.Token, Result: resultOf(errs[k])})
		completing = append(completing, k)
	}
	if len(items) == 0 {
		return
	}
	resp, err := c.svc.BatchComplete(fctx, &idemv1.BatchCompleteRequest{
		Tenant: c.o.tenant, Namespace: ns, Retention: dur(c.o.retention), Items: items,
	})
	if err == nil && len(resp.GetResults()) != len(items) {
		err = fmt.Errorf("idem: consumer: batch complete answered %d results for %d items", len(resp.GetResults()), len(items))
	}
	if err == nil {
		c.retryCodeOnly(fctx, ns, items, resp.GetResults())
	}
	for n, k := range completing {
		m := fresh[k]
		switch {
		case err != nil:
			results[idx[k]] = Result{Outcome: Errored, Token: m.Token, Err: fmt.Errorf("idem: consumer: batch complete: %w", err)}
		case resp.GetResults()[n].GetError() != nil:
			results[idx[k]] = Result{Outcome: Errored, Token: m.Token, Err: fmt.Errorf("idem: consumer: complete %s: %w", msgRef(ns, m.ID), itemError(resp.GetResults()[n].GetError()))}
		case errs[k] != nil:
			results[idx[k]] = Result{Outcome: Failed, Token: m.Token}
		default:
			results[idx[k]] = Result{Outcome: Processed, Token: m.Token}
		}
	}
}

// retryCodeOnly completes again, with their code alone, the permanent
// failures whose text the namespace refused (as Handle does), and puts the
// new answers in results.
func (c *Consumer) retryCodeOnly(ctx context.Context, ns string, items []*idemv1.BatchCompleteRequest_Item, results []*idemv1.BatchCompleteResponse_Result) {
	var again []*idemv1.BatchCompleteRequest_Item
	var at []int
	for n, it := range items {
		if results[n].GetError().GetCode() == 3 && it.GetResult().GetCode() != 0 { // INVALID_ARGUMENT
			again = append(again, &idemv1.BatchCompleteRequest_Item{Key: it.GetKey(), Token: it.GetToken(), Result: codeOnly})
			at = append(at, n)
		}
	}
	if len(again) == 0 {
		return
	}
	resp, err := c.svc.BatchComplete(ctx, &idemv1.BatchCompleteRequest{
		Tenant: c.o.tenant, Namespace: ns, Retention: dur(c.o.retention), Items: again,
	})
	if err != nil || len(resp.GetResults()) != len(again) {
		return // the first answers stand: the messages are Errored
	}
	for i, n := range at {
		results[n] = resp.GetResults()[i]
	}
}

// itemError maps a batch item's status code to idem's sentinels, as the
// client does for whole calls, so errors.Is works the same.
func itemError(e *idemv1.ItemError) error {
	var s error
	switch e.GetCode() {
	case 3: // INVALID_ARGUMENT
		s = idem.ErrInvalidArgument
	case 5: // NOT_FOUND
		s = idem.ErrNotFound
	case 7: // PERMISSION_DENIED
		s = idem.ErrPermissionDenied
	case 8: // RESOURCE_EXHAUSTED
		s = idem.ErrResourceExhausted
	case 9: // FAILED_PRECONDITION
		s = idem.ErrLeaseLost
	case 14: // UNAVAILABLE
		s = idem.ErrUnavailable
	default:
		return fmt.Errorf("idem: batch item failed (code %d): %s", e.GetCode(), e.GetMessage())
	}
	return fmt.Errorf("%w: %s", s, e.GetMessage())
}
