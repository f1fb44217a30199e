package memory

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// model is a table and the map it must agree with. Keys' tags come from
// a few values whose homes are near the end of the table, so keys collide
// on their home slot and on their whole tag, and clusters wrap around.
type model struct {
	tb   table
	want map[string]string
	tags int
}

func newModel(tags int) *model { return &model{want: map[string]string{}, tags: max(tags, 1)} }

func (m *model) tag(k string) uint64 {
	var h uint64
	for _, c := range []byte(k) {
		h = h*31 + uint64(c)
	}
	n := h % uint64(m.tags)
	return tagOf((0xffffffff-n)<<32 | n<<1)
}

func (m *model) set(k string, v []byte, expires int64) {
	i, found := m.tb.find(m.tag(k), []byte(k))
	m.tb.set(i, found, m.tag(k), []byte(k), v, expires)
	m.want[k] = string(v)
}

func (m *model) delete(k string) {
	if i, found := m.tb.find(m.tag(k), []byte(k)); found {
		m.tb.deleteAt(i)
	}
	delete(m.want, k)
}

// sweep deletes every slot whose value is shorter than cut, looking at a
// slot again after a delete, as Store.Sweep does.
func (m *model) sweep(cut int) {
	for i := 0; i < len(m.tb.slots); {
		if s := m.tb.slots[i]; s.tag != 0 {
			if sk, v := m.tb.entry(s.ref); len(v) < cut {
				delete(m.want, string(sk))
				m.tb.deleteAt(i)
				continue
			}
		}
		i++
	}
}

func (m *model) check(t testing.TB, step int) {
	t.Helper()
	if m.tb.n != len(m.want) {
		t.Fatalf("step %d: table holds %d slots, want %d", step, m.tb.n, len(m.want))
	}
	for k, v := range m.want {
		i, ok := m.tb.find(m.tag(k), []byte(k))
		if !ok {
			t.Fatalf("step %d: key %q not found", step, k)
		}
		if _, got := m.tb.entry(m.tb.slots[i].ref); string(got) != v {
			t.Fatalf("step %d: key %q = %q, want %q", step, k, got, v)
		}
	}
	if live := m.tb.used - m.tb.dead; live != liveBytes(m.want) {
		t.Fatalf("step %d: live entry bytes = %d, want %d", step, live, liveBytes(m.want))
	}
}

// TestTableAgainstMap drives a table through random writes, overwrites,
// deletions and sweeps and checks it against a map. It covers probing
// across the table's end, backward-shift deletion, growth and arena
// compaction; with 6,000 keys the table and the chunks grow past
// offheapMin and live off the heap.
func TestTableAgainstMap(t *testing.T) {
	for _, tc := range []struct{ tags, keys int }{{1, 200}, {3, 200}, {64, 200}, {4096, 6000}} {
		t.Run(fmt.Sprintf("tags=%d,keys=%d", tc.tags, tc.keys), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(tc.tags)))
			m := newModel(tc.tags)
			defer m.tb.reset()
			for step := range 10 * max(2000, tc.keys) {
				k := fmt.Sprintf("k%d", rng.IntN(tc.keys))
				switch op := rng.IntN(10); {
				case op < 6:
					m.set(k, bytes.Repeat([]byte{byte('a' + step%26)}, rng.IntN(300)), int64(rng.IntN(100)))
				case op < 9:
					m.delete(k)
				default:
					m.sweep(rng.IntN(100))
				}
				if step%97 == 0 || step < 200 {
					m.check(t, step)
				}
			}
			m.check(t, -1)
			if tc.keys > 1000 && !m.tb.slotsBlk.Mapped() {
				t.Errorf("a table of %d slots is on the heap", len(m.tb.slots))
			}
		})
	}
}

// FuzzTable runs the model on operations read from the input, two bytes
// each: what to do (write, delete or sweep) and to which of 64 keys, with
// the value's length from the key's byte.
func FuzzTable(f *testing.F) {
	f.Add(uint8(1), []byte{0, 1, 0, 2, 0, 3, 1, 2, 2, 40, 0, 2})
	f.Add(uint8(3), bytes.Repeat([]byte{0, 7, 0, 9, 1, 7, 2, 90}, 40))
	f.Add(uint8(64), bytes.Repeat([]byte{0, 200, 0, 13, 1, 200, 0, 77}, 100))
	f.Fuzz(func(t *testing.T, tags uint8, ops []byte) {
		m := newModel(int(tags))
		defer m.tb.reset()
		for step := 0; step+1 < len(ops); step += 2 {
			op, arg := ops[step], ops[step+1]
			k := fmt.Sprintf("k%d", arg%64)
			switch op % 4 {
			case 0, 1:
				m.set(k, bytes.Repeat([]byte{op}, int(arg)), int64(step))
			case 2:
				m.delete(k)
			default:
				m.sweep(int(arg))
			}
			m.check(t, step)
		}
	})
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
