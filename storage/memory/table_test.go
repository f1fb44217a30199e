package memory

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestTableAgainstMap drives a table through random writes, overwrites,
// deletions and sweeps with hashes drawn from a handful of values, so keys
// collide on their home slot and on their whole tag, and checks every step
// against a map. It covers probing across the table's end, backward-shift
// deletion, growth and arena compaction; with 6,000 keys the table and the
// chunks grow past offheapMin and live off the heap.
func TestTableAgainstMap(t *testing.T) {
	for _, tc := range []struct{ tags, keys int }{{1, 200}, {3, 200}, {64, 200}, {4096, 6000}} {
		tags, keys := tc.tags, tc.keys
		t.Run(fmt.Sprintf("tags=%d,keys=%d", tags, keys), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(tags)))
			// Every tag's home is near the end of an 8- or 16-slot
			// table, so clusters wrap around.
			tagOfKey := func(k string) uint64 {
				var h uint64
				for _, c := range []byte(k) {
					h = h*31 + uint64(c)
				}
				return tagOf((0xffffffff-h%uint64(tags))<<32 | h%uint64(tags)<<1)
			}
			var tb table
			want := map[string]string{}
			check := func(step int) {
				t.Helper()
				if tb.n != len(want) {
					t.Fatalf("step %d: table holds %d slots, want %d", step, tb.n, len(want))
				}
				for k, v := range want {
					i, ok := tb.find(tagOfKey(k), []byte(k))
					if !ok {
						t.Fatalf("step %d: key %q not found", step, k)
					}
					if _, got := tb.entry(tb.slots[i].ref); string(got) != v {
						t.Fatalf("step %d: key %q = %q, want %q", step, k, got, v)
					}
				}
				if live := tb.used - tb.dead; live != liveBytes(want) {
					t.Fatalf("step %d: live entry bytes = %d, want %d", step, live, liveBytes(want))
				}
			}
			for step := range 10 * max(2000, keys) {
				k := fmt.Sprintf("k%d", rng.IntN(keys))
				tag := tagOfKey(k)
				switch op := rng.IntN(10); {
				case op < 6:
					v := bytes.Repeat([]byte{byte('a' + step%26)}, rng.IntN(300))
					i, found := tb.find(tag, []byte(k))
					tb.set(i, found, tag, []byte(k), v, int64(rng.IntN(100)))
					want[k] = string(v)
				case op < 9:
					if i, found := tb.find(tag, []byte(k)); found {
						tb.deleteAt(i)
					}
					delete(want, k)
				default:
					// A sweep: delete every slot whose value is shorter
					// than a cut, looking at a slot again after a delete.
					cut := rng.IntN(100)
					for i := 0; i < len(tb.slots); {
						if s := tb.slots[i]; s.tag != 0 {
							if sk, v := tb.entry(s.ref); len(v) < cut {
								delete(want, string(sk))
								tb.deleteAt(i)
								continue
							}
						}
						i++
					}
				}
				if step%97 == 0 || step < 200 {
					check(step)
				}
			}
			check(-1)
			if keys > 1000 && !tb.slotsBlk.Mapped() {
				t.Errorf("a table of %d slots is on the heap", len(tb.slots))
			}
			tb.reset()
		})
	}
}

func liveBytes(m map[string]string) int {
	n := 0
	for k, v := range m {
		n += entryHeader + len(k) + len(v)
	}
	return n
}

// TestTableCompaction checks that overwriting the same records again and
// again keeps the arena within a small multiple of the live bytes.
func TestTableCompaction(t *testing.T) {
	var tb table
	v := bytes.Repeat([]byte("x"), 200)
	for round := range 1000 {
		for k := range 50 {
			key := []byte(fmt.Sprintf("key-%d", k))
			tag := tagOf(uint64(k) << 32)
			i, found := tb.find(tag, key)
			tb.set(i, found, tag, key, v, int64(round))
		}
	}
	live := tb.used - tb.dead
	held := 0
	for _, c := range tb.chunks {
		held += cap(c.b)
	}
	if held > 4*live+2*minCompactAt {
		t.Fatalf("arena holds %d bytes for %d live ones", held, live)
	}
}
