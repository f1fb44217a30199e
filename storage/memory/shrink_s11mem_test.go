package memory

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

// held is the memory a shard's table and arena keep.
func (t *table) held() int {
	n := len(t.slots) * 24
	for _, c := range t.chunks {
		n += cap(c.b)
	}
	return n
}

// TestSweepReturnsBurstMemory: a burst of short-lived records grew a
// shard's table past offheapMin, off the heap. Once they expired and were
// swept the table stayed at its peak, mapped and resident, for the life of
// the store: churn did not grow RSS without end, but never gave back a
// peak either. Rounds of bursts must leave the store holding what its
// remaining records need.
func TestSweepReturnsBurstMemory(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	s := New(WithClock(clock), WithShards(1), WithSweepInterval(0))
	defer s.Close()
	for round := range 3 {
		for i := range 20000 {
			mustReserve(t, ctx, s, fmt.Sprintf("burst-%d-%d", round, i), time.Second, time.Second)
		}
		mustReserve(t, ctx, s, fmt.Sprintf("keep-%d", round), time.Hour, time.Hour)
		clock.Advance(2 * time.Second)
		if n := s.Sweep(); n != 20000 {
			t.Fatalf("round %d: Sweep() = %d, want 20000", round, n)
		}
		if err := s.checkTables(); err != nil {
			t.Fatal(err)
		}
		tb := &s.shards[0].t
		if tb.slotsBlk.Mapped() || len(tb.slots) > 64 {
			t.Errorf("round %d: after the sweep the table has %d slots (mapped %v) for %d records", round, len(tb.slots), tb.slotsBlk.Mapped(), tb.n)
		}
		if h := tb.held(); h > 64<<10 {
			t.Errorf("round %d: after the sweep the shard holds %d bytes for %d records", round, h, tb.n)
		}
		for r := range round + 1 {
			if _, err := s.Lookup(ctx, id(fmt.Sprintf("keep-%d", r))); err != nil {
				t.Errorf("round %d: Lookup(keep-%d) error = %v", round, r, err)
			}
		}
	}
}

// TestTableShrinkAgainstMap runs the model with a shrink after every
// sweep, so tables shrink with clusters that wrap around the end.
func TestTableShrinkAgainstMap(t *testing.T) {
	for _, tc := range []struct{ tags, keys int }{{1, 200}, {3, 200}, {64, 500}, {4096, 6000}} {
		t.Run(fmt.Sprintf("tags=%d,keys=%d", tc.tags, tc.keys), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(2, uint64(tc.tags)))
			m := newModel(tc.tags)
			defer m.tb.reset()
			shrunk := 0
			for step := range 10 * max(2000, tc.keys) {
				k := fmt.Sprintf("k%d", rng.IntN(tc.keys))
				switch op := rng.IntN(20); {
				case op < 12:
					m.set(k, bytes.Repeat([]byte{byte('a' + step%26)}, rng.IntN(300)), int64(step))
				case op < 19:
					m.delete(k)
				default:
					m.sweep(rng.IntN(300))
					before := len(m.tb.slots)
					m.tb.shrink()
					if len(m.tb.slots) < before {
						shrunk++
					}
				}
				if step%97 == 0 || step < 200 {
					m.check(t, step)
				}
			}
			m.check(t, -1)
			if shrunk == 0 {
				t.Errorf("the table never shrank")
			}
		})
	}
}
