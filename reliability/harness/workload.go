package harness

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/reliability/model"
)

// Workload is a mixed load of Reserve, Complete, Release and Lookup from
// many clients over a small, sliding set of keys, so that keys see
// contention and each key's history stays short enough to check.
type Workload struct {
	Clients int
	// Keys is how many keys are live at once; the window slides by one key
	// every KeyEvery calls so that finished keys give way to fresh ones.
	Keys     int
	KeyEvery int
	// Ops caps the calls of all clients together; 0 runs until ctx ends.
	Ops int
	// Prefix makes keys unique to one run (or one crash cycle).
	Prefix string
	// Seed makes the choices reproducible (timing still is not).
	Seed uint64
	// Think is the most a client pauses before each command (uniformly
	// random), which paces the load; 0 runs flat out.
	Think time.Duration
	// Readers are extra clients (after the first Clients ones) that only
	// look up live keys, back to back: they catch reads of state that was
	// visible before it was durable.
	Readers int
	// Backoff is a client's pause after a call with an unknown outcome
	// (default 100ms), so a down server sees a few retries, not a flood.
	Backoff time.Duration
}

// Run drives the workload with clients, one goroutine per client, and
// returns the keys it touched. Each client makes a new attempt after an
// unknown outcome, as a caller's retry would, as a separate call.
func (w Workload) Run(ctx context.Context, clients []*Client) []string {
	var (
		issued atomic.Int64
		mu     sync.Mutex
		keys   = map[string]bool{}
		wg     sync.WaitGroup
	)
	keyEvery := max(w.KeyEvery, 1)
	next := func() (int64, bool) {
		n := issued.Add(1)
		return n, ctx.Err() == nil && (w.Ops == 0 || n <= int64(w.Ops))
	}
	for i, c := range clients[:min(w.Clients, len(clients))] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(w.Seed, uint64(i)))
			for {
				if w.Think > 0 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(rand.N(w.Think)):
					}
				}
				n, ok := next()
				if !ok {
					return
				}
				key := fmt.Sprintf("%s-%d", w.Prefix, int(n)/keyEvery+rng.IntN(w.Keys))
				mu.Lock()
				keys[key] = true
				mu.Unlock()
				w.step(ctx, c, rng, key, n)
			}
		}()
	}
	for i, c := range clients[min(w.Clients, len(clients)):min(w.Clients+w.Readers, len(clients))] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(w.Seed, uint64(1000+i)))
			for ctx.Err() == nil && (w.Ops == 0 || issued.Load() < int64(w.Ops)) {
				key := fmt.Sprintf("%s-%d", w.Prefix, int(issued.Load())/keyEvery+rng.IntN(w.Keys))
				if c.Lookup(ctx, key).Unknown {
					w.pause(ctx)
				}
			}
		}()
	}
	wg.Wait()
	out := make([]string, 0, len(keys))
	for k := range keys {
		out = append(out, k)
	}
	return out
}

// step is one logical command on key: mostly Reserve and then Complete or
// Release as a real caller would, with a share of lookups, conflicting
// fingerprints, stale tokens and duplicate completions.
func (w Workload) step(ctx context.Context, c *Client, rng *rand.Rand, key string, n int64) {
	fp := "fp-" + key
	switch p := rng.IntN(100); {
	case p < 20:
		c.Lookup(ctx, key)
		return
	case p < 25:
		c.Reserve(ctx, key, "other")
		return
	case p < 30:
		// A caller with a stale or made-up token must be refused.
		tok := uint64(rng.IntN(3) + 1)
		if rng.IntN(2) == 0 {
			c.Release(ctx, key, tok)
		} else {
			c.Complete(ctx, key, tok, result(c.ID, n, 0))
		}
		return
	}
	out := c.Reserve(ctx, key, fp)
	if out.Unknown && w.pause(ctx) {
		out = c.Reserve(ctx, key, fp) // the caller's retry
	}
	switch {
	case out.Unknown:
		w.pause(ctx)
		return
	case out.Outcome == model.OutcomeInProgress && rng.IntN(10) == 0:
		// Somebody else holds it; a confused caller that reuses the
		// holder's token races the holder: one result wins.
		c.Complete(ctx, key, out.Token, result(c.ID, n, 1))
		return
	case out.Outcome != model.Reserved:
		return
	}
	if rng.IntN(10) < 6 {
		r := result(c.ID, n, 2)
		got := c.Complete(ctx, key, out.Token, r)
		if got.Unknown && w.pause(ctx) || rng.IntN(10) == 0 {
			c.Complete(ctx, key, out.Token, r) // a retry must succeed again
		}
		if rng.IntN(20) == 0 {
			c.Complete(ctx, key, out.Token, result(c.ID, n, 3)) // a different result is refused
		}
		return
	}
	if got := c.Release(ctx, key, out.Token); got.Unknown && w.pause(ctx) {
		c.Release(ctx, key, out.Token)
	}
}

// pause is a caller's backoff after a call with an unknown outcome. It
// reports whether the caller should go on.
func (w Workload) pause(ctx context.Context) bool {
	d := w.Backoff
	if d == 0 {
		d = 100 * time.Millisecond
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// result is a result unique to one call, with every field set.
func result(client int, n int64, variant int) *idemv1.Result {
	return &idemv1.Result{
		Code:    int32(n % 17),
		Message: fmt.Sprintf("client %d call %d", client, n),
		Body:    fmt.Appendf(nil, "body-%d-%d-%d", client, n, variant),
	}
}
