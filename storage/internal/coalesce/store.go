package coalesce

import (
	"context"

	"github.com/idemhq/idem/storage"
)

// Backend is what Ops coalesces: a store's single-record Reserve and
// Complete, and its batch calls, each one round trip (or one commit).
type Backend struct {
	Reserve       func(context.Context, storage.ReserveParams) (storage.Outcome, *storage.Record, error)
	Complete      func(context.Context, storage.CompleteParams) (*storage.Record, error)
	BatchReserve  func(context.Context, []storage.ReserveParams) ([]storage.ReserveResult, error)
	BatchComplete func(context.Context, []storage.CompleteParams) ([]storage.CompleteResult, error)
	// OneByOne, when set, reports whether a batch that failed as a whole
	// with err should run again item by item (say, the database refused
	// one item's data), so that only that item fails. Otherwise every item
	// gets err.
	OneByOne func(ctx context.Context, err error) bool
	// Distinct keeps a record out of a batch that already holds it, for
	// batch calls that cannot take one record twice.
	Distinct bool
}

// Ops coalesces a store's Reserves, and apart its Completes: a lone call
// runs alone through the single-record call, concurrent ones share a batch
// call.
type Ops struct {
	b         Backend
	reserves  *Coalescer[storage.ReserveParams, storage.ReserveResult]
	completes *Coalescer[storage.CompleteParams, storage.CompleteResult]
}

// NewOps returns Ops with slots batches of each kind in flight, of at most
// max calls each.
func NewOps(slots, max int, b Backend) *Ops {
	o := &Ops{b: b}
	o.reserves = &Coalescer[storage.ReserveParams, storage.ReserveResult]{Slots: slots, Max: max, Run: o.runReserves}
	o.completes = &Coalescer[storage.CompleteParams, storage.CompleteResult]{Slots: slots, Max: max, Run: o.runCompletes}
	if b.Distinct {
		o.reserves.ID = func(p storage.ReserveParams) storage.ID { return p.ID }
		o.completes.ID = func(p storage.CompleteParams) storage.ID { return p.ID }
	}
	return o
}

// Reserve is storage.Store's Reserve, coalesced.
func (o *Ops) Reserve(ctx context.Context, p storage.ReserveParams) (storage.Outcome, *storage.Record, error) {
	r, err := o.reserves.Do(ctx, p)
	if err == nil {
		err = r.Err
	}
	if err != nil {
		return 0, nil, err
	}
	return r.Outcome, r.Record, nil
}

// Complete is storage.Store's Complete, coalesced.
func (o *Ops) Complete(ctx context.Context, p storage.CompleteParams) (*storage.Record, error) {
	r, err := o.completes.Do(ctx, p)
	if err == nil {
		err = r.Err
	}
	return r.Record, err
}

func (o *Ops) runReserves(ctx context.Context, items []storage.ReserveParams) []storage.ReserveResult {
	return answer(ctx, o.b.OneByOne, items, o.b.BatchReserve,
		func(ctx context.Context, p storage.ReserveParams) (r storage.ReserveResult) {
			r.Outcome, r.Record, r.Err = o.b.Reserve(ctx, p)
			return r
		},
		func(err error) storage.ReserveResult { return storage.ReserveResult{Err: err} })
}

func (o *Ops) runCompletes(ctx context.Context, items []storage.CompleteParams) []storage.CompleteResult {
	return answer(ctx, o.b.OneByOne, items, o.b.BatchComplete,
		func(ctx context.Context, p storage.CompleteParams) (r storage.CompleteResult) {
			r.Record, r.Err = o.b.Complete(ctx, p)
			return r
		},
		func(err error) storage.CompleteResult { return storage.CompleteResult{Err: err} })
}

// answer runs a lone item with one and more with batch; a batch that fails
// as a whole answers every item with failed(err), or runs them one by one
// when oneByOne says so.
func answer[P, R any](ctx context.Context, oneByOne func(context.Context, error) bool, items []P,
	batch func(context.Context, []P) ([]R, error), one func(context.Context, P) R, failed func(error) R) []R {
	out := make([]R, len(items))
	if len(items) > 1 {
		res, err := batch(ctx, items)
		if err == nil {
			return res
		}
		if oneByOne == nil || !oneByOne(ctx, err) {
			for i := range out {
				out[i] = failed(err)
			}
			return out
		}
	}
	for i, p := range items {
		out[i] = one(ctx, p)
	}
	return out
}
