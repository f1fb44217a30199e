// Package coalesce runs concurrent single-record calls of one kind as
// batches, for backends whose batch costs one round trip.
package coalesce

import (
	"context"
	"sync"
	"time"

	"github.com/idemhq/idem/storage"
)

// Coalescer runs concurrent single-record calls of one kind (Reserve, or
// Complete) as batches, the way a database's group commit shares one log
// flush: at most slots batches are in flight; a call that finds a slot
// free starts one at once with itself and whatever waits, and a call that
// does not waits until a running batch finishes and takes the queue. An
// idle store therefore adds no wait, and a busy one sends one statement
// (one round trip, one commit) for many callers instead of one each, which
// is where idemd's and the database's CPU per call went: the write and
// wake-up of every round trip, parsing, planning and committing each.
//
// A batch never holds one record twice: a second call for the same record
// waits for the next batch, so the database sees the two one after the
// other, as it would without coalescing.
type Coalescer[P any, R any] struct {
	// Slots is how many batches may be in flight at once (at least 1).
	Slots int
	// Max bounds a batch.
	Max int
	// ID names the record a call is for, so a batch holds each record at
	// most once. Nil: a batch may hold one record twice, for backends that
	// run a batch's items one after the other in order.
	ID func(P) storage.ID
	// Run answers one result per item, in order; a batch-wide error goes
	// into each item's result.
	Run func(ctx context.Context, items []P) []R

	mu    sync.Mutex
	busy  int
	queue []*waiter[P, R]
}

type waiter[P any, R any] struct {
	ctx    context.Context
	p      P
	r      R
	done   chan struct{}
	queued bool // under mu: not yet taken into a batch
}

// Do runs p in the next batch and returns its result, or ctx's error if ctx
// ends first (the call may still be applied, as with any statement whose
// answer was not awaited).
func (c *Coalescer[P, R]) Do(ctx context.Context, p P) (R, error) {
	w := &waiter[P, R]{ctx: ctx, p: p, done: make(chan struct{}), queued: true}
	c.mu.Lock()
	c.queue = append(c.queue, w)
	if c.busy < c.Slots {
		c.busy++
		batch := c.take()
		c.mu.Unlock()
		go c.loop(batch)
	} else {
		c.mu.Unlock()
	}
	select {
	case <-w.done:
		return w.r, nil
	case <-ctx.Done():
		c.mu.Lock()
		if w.queued {
			for i, q := range c.queue {
				if q == w {
					c.queue = append(c.queue[:i], c.queue[i+1:]...)
					break
				}
			}
			w.queued = false
		}
		c.mu.Unlock()
		var zero R
		return zero, ctx.Err()
	}
}

// take removes the next batch from the queue: in arrival order, skipping
// callers that gave up and records already in the batch. Under mu.
func (c *Coalescer[P, R]) take() []*waiter[P, R] {
	batch := make([]*waiter[P, R], 0, min(len(c.queue), c.Max))
	var seen map[storage.ID]bool
	if len(c.queue) > 1 && c.ID != nil {
		seen = make(map[storage.ID]bool, len(batch))
	}
	rest := c.queue[:0]
	for _, w := range c.queue {
		if w.ctx.Err() != nil {
			w.queued = false
			continue
		}
		if len(batch) < c.Max && (seen == nil || !seen[c.ID(w.p)]) {
			if seen != nil {
				seen[c.ID(w.p)] = true
			}
			w.queued = false
			batch = append(batch, w)
			continue
		}
		rest = append(rest, w)
	}
	clear(c.queue[len(rest):])
	c.queue = rest
	return batch
}

// loop runs batches while callers wait, then frees its slot.
func (c *Coalescer[P, R]) loop(batch []*waiter[P, R]) {
	growStack(0)
	for {
		if len(batch) > 0 {
			c.runBatch(batch)
		}
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.busy--
			c.mu.Unlock()
			return
		}
		batch = c.take()
		c.mu.Unlock()
	}
}

func (c *Coalescer[P, R]) runBatch(batch []*waiter[P, R]) {
	items := make([]P, len(batch))
	for i, w := range batch {
		items[i] = w.p
	}
	ctx, cancel := batchContext(batch)
	defer cancel()
	res := c.Run(ctx, items)
	for i, w := range batch {
		w.r = res[i]
		close(w.done)
	}
}

// batchContext outlives any one caller (a caller that gives up must not
// fail the others' statement) but not all of them: its deadline is the
// latest of theirs, when they all have one. It keeps the first caller's
// values, for tracing.
func batchContext[P, R any](batch []*waiter[P, R]) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, w := range batch {
		d, ok := w.ctx.Deadline()
		if !ok {
			return context.WithCancel(context.WithoutCancel(batch[0].ctx))
		}
		if d.After(latest) {
			latest = d
		}
	}
	return context.WithDeadline(context.WithoutCancel(batch[0].ctx), latest)
}

// growStack grows a new batch goroutine's stack, while it is shallow, to
// what a database client's query path needs: growing it step by step deep
// inside pgx copied every frame each time, about 5% of idemd's CPU.
//
//go:noinline
func growStack(i int) byte {
	var buf [16 << 10]byte
	return buf[i&(len(buf)-1)]
}
