package redis

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/idemhq/idem/storage/memory"
	"github.com/idemhq/idem/storage/storagetest"
)

// pinnedClock is storagetest.Differential's clock for a store whose now is
// Redis TIME: every Advance, 0 included, sets the offset so that the
// store's now is where the advances put it, undoing the real time passed.
type pinnedClock struct {
	us    atomic.Int64
	start time.Time
	adv   time.Duration
}

func (c *pinnedClock) Advance(d time.Duration) {
	c.adv += d
	c.us.Store(c.start.Add(c.adv).Sub(time.Now()).Microseconds())
}

// TestDifferential makes the same random calls, batches naming a record
// more than once among them, on this store and on the memory store, and
// wants the same answers.
func TestDifferential(t *testing.T) {
	for _, co := range []string{"0", "2"} {
		for seed := range uint64(3) {
			t.Run(fmt.Sprintf("coalesce=%s/seed=%d", co, seed), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
				defer cancel()
				s := openTest(ctx, t, "coalesce="+co)
				clock := &pinnedClock{start: time.Now()}
				s.offset = clock.us.Load
				refClock := clockwork.NewFakeClock()
				ref := memory.New(memory.WithClock(refClock))
				defer ref.Close()
				storagetest.Differential(t, storagetest.DifferentialConfig{
					Ref: ref, RefClock: refClock, Store: s, Clock: clock, Steps: 3000, Seed: seed, Repeats: true,
				})
			})
		}
	}
}
