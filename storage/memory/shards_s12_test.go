package memory

import (
	"math"
	"testing"
)

// TestShardsCapped: rounding a shard count up to a power of two overflowed
// int past 1<<62 and looped for ever (WithShards(math.MaxInt)), and a count
// like 1<<40 panicked in make. Counts above the URL's 65536 now get 65536.
func TestShardsCapped(t *testing.T) {
	for _, in := range []int{1<<16 + 1, 1 << 40, math.MaxInt} {
		s := New(WithShards(in), WithSweepInterval(0))
		if got := len(s.shards); got != 1<<16 {
			t.Errorf("WithShards(%d): %d shards, want %d", in, got, 1<<16)
		}
		s.Close()
	}
}
