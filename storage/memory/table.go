package memory

import (
	"bytes"
	"encoding/binary"
	"unsafe"

	"github.com/idemhq/idem/storage/internal/offheap"
)

// A shard keeps its records in two pointer-free structures, so the garbage
// collector neither scans them nor counts an object per record, however
// many records the store holds, and writing a record allocates only when
// its chunk is full or the table grows:
//
//   - an open-addressed hash table of slots (linear probing, deletion by
//     backward shift, so there are no tombstones), each holding the key's
//     hash, the record's expiry and where its bytes are;
//   - an arena of byte chunks that entries ([key length u32][value length
//     u32][key][value]) are appended to. A rewritten or deleted record's old
//     entry stays where it is, counted as dead, until the shard has more
//     dead bytes than live ones and copies its live entries to new chunks.
//
// Tables and chunks of 64 KiB and more live outside the Go heap
// (package offheap), so a large store costs its records' size in RSS
// rather than five times it under idemd's GC target. Their memory is
// returned when a table grows or shrinks (after a sweep), a compaction
// retires chunks, or the store closes, so bytes read from the arena must
// be copied (or decoded, which copies) before the shard's lock is
// released.

// slot is one table entry. tag is the key's hash with bit 0 set, so 0
// marks an empty slot; a slot's home is hash>>32 modulo the table size, so
// the table uses other bits of the hash than the shard index does.
type slot struct {
	tag     uint64
	expires int64  // the record's ExpiresAt in Unix nanoseconds, saturated (recordcodec.UnixNano)
	ref     uint64 // chunk index<<32 | offset of the entry in the chunk
}

const (
	minSlots     = 8
	minChunk     = 1 << 10
	maxChunk     = 256 << 10
	entryHeader  = 8
	minCompactAt = 16 << 10 // dead bytes below which a shard never compacts
	offheapMin   = 64 << 10 // allocations from this size on live off the heap
)

type table struct {
	slots    []slot
	slotsBlk offheap.Block // backs slots when they live off the heap
	n        int           // occupied slots
	chunks   []chunk
	used     int // entry bytes in chunks, live and dead
	dead     int // entry bytes no slot refers to
}

// chunk is a piece of the arena: entries are appended to b up to its cap.
type chunk struct {
	b   []byte
	blk offheap.Block // backs b when it lives off the heap
}

func newChunk(size int) chunk {
	if size < offheapMin {
		return chunk{b: make([]byte, 0, size)}
	}
	blk := offheap.Alloc(size)
	return chunk{b: blk.B[:0], blk: blk}
}

func allocSlots(n int) ([]slot, offheap.Block) {
	size := n * int(unsafe.Sizeof(slot{}))
	if size < offheapMin {
		return make([]slot, n), offheap.Block{}
	}
	blk := offheap.Alloc(size)
	return unsafe.Slice((*slot)(unsafe.Pointer(unsafe.SliceData(blk.B))), n), blk
}

func tagOf(h uint64) uint64 { return h | 1 }

func (t *table) home(tag uint64) int { return int(tag>>32) & (len(t.slots) - 1) }

// entryAt returns the key and value of the entry at ref in chunks.
func entryAt(chunks []chunk, ref uint64) (k, v []byte) {
	b := chunks[ref>>32].b[uint32(ref):]
	kl := binary.LittleEndian.Uint32(b)
	vl := binary.LittleEndian.Uint32(b[4:])
	b = b[entryHeader:]
	return b[:kl:kl], b[kl : kl+vl : kl+vl]
}

func (t *table) entry(ref uint64) (k, v []byte) { return entryAt(t.chunks, ref) }

func (t *table) entrySize(ref uint64) int {
	k, v := t.entry(ref)
	return entryHeader + len(k) + len(v)
}

// find returns the slot holding k, or the empty slot where k would go.
func (t *table) find(tag uint64, k []byte) (int, bool) {
	if len(t.slots) == 0 {
		return -1, false
	}
	m := len(t.slots) - 1
	for i := t.home(tag); ; i = (i + 1) & m {
		s := &t.slots[i]
		if s.tag == 0 {
			return i, false
		}
		if s.tag == tag {
			if sk, _ := t.entry(s.ref); bytes.Equal(sk, k) {
				return i, true
			}
		}
	}
}

// append copies an entry for k and v into the arena and returns its ref.
func (t *table) append(k, v []byte) uint64 {
	need := entryHeader + len(k) + len(v)
	c := len(t.chunks) - 1
	if c < 0 || cap(t.chunks[c].b)-len(t.chunks[c].b) < need {
		size := minChunk
		if c >= 0 {
			size = min(2*cap(t.chunks[c].b), maxChunk)
		}
		t.chunks = append(t.chunks, newChunk(max(size, need)))
		c++
	}
	b := t.chunks[c].b
	off := len(b)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(k)))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
	b = append(b, k...)
	t.chunks[c].b = append(b, v...)
	t.used += need
	return uint64(c)<<32 | uint64(off)
}

// set stores k's record (v, expiring at expires) in slot i, as found by
// find: over the entry there, or into the empty slot.
func (t *table) set(i int, found bool, tag uint64, k, v []byte, expires int64) {
	if found {
		t.dead += t.entrySize(t.slots[i].ref)
		t.slots[i].expires = expires
		t.slots[i].ref = t.append(k, v)
		t.maybeCompact()
		return
	}
	ref := t.append(k, v)
	if i < 0 || (t.n+1)*4 > len(t.slots)*3 {
		t.grow()
		i, _ = t.find(tag, k)
	}
	t.slots[i] = slot{tag: tag, expires: expires, ref: ref}
	t.n++
}

// grow doubles the table (or makes the first one) and rehashes every slot.
func (t *table) grow() { t.resize(max(minSlots, 2*len(t.slots))) }

// shrink halves the table while an eighth of it or less is in use, so a
// burst of records that has since been swept does not keep its table
// (mapped and touched, so resident) for the life of the store. After it
// the table is more than an eighth full and grows again at three
// quarters, so a shard that swings around one size does not rehash on
// every sweep.
func (t *table) shrink() {
	size := len(t.slots)
	for size > minSlots && t.n*8 <= size {
		size /= 2
	}
	if size < len(t.slots) {
		t.resize(size)
	}
}

// resize moves every slot into a new table of size slots, a power of two
// with room for them all.
func (t *table) resize(size int) {
	old, oldBlk := t.slots, t.slotsBlk
	t.slots, t.slotsBlk = allocSlots(size)
	defer oldBlk.Free()
	m := len(t.slots) - 1
	for _, s := range old {
		if s.tag == 0 {
			continue
		}
		i := t.home(s.tag)
		for t.slots[i].tag != 0 {
			i = (i + 1) & m
		}
		t.slots[i] = s
	}
}

// deleteAt empties slot i and shifts back the slots after it that probing
// would no longer reach, so lookups never need tombstones.
func (t *table) deleteAt(i int) {
	t.dead += t.entrySize(t.slots[i].ref)
	m := len(t.slots) - 1
	for j := (i + 1) & m; t.slots[j].tag != 0; j = (j + 1) & m {
		h := t.home(t.slots[j].tag)
		// The slot at j may fill the hole at i unless its home lies
		// cyclically in (i, j].
		if (j > i && (h <= i || h > j)) || (j < i && h <= i && h > j) {
			t.slots[i] = t.slots[j]
			i = j
		}
	}
	t.slots[i] = slot{}
	t.n--
	t.maybeCompact()
}

// maybeCompact copies the live entries to new chunks once dead bytes
// outweigh them, so a shard's arena stays within about twice its records.
func (t *table) maybeCompact() {
	live := t.used - t.dead
	if t.dead < minCompactAt || t.dead <= live {
		return
	}
	old := t.chunks
	t.chunks = []chunk{newChunk(min(max(live, minChunk), 64<<20))}
	t.used, t.dead = 0, 0
	for i := range t.slots {
		if s := &t.slots[i]; s.tag != 0 {
			s.ref = t.append(entryAt(old, s.ref))
		}
	}
	for i := range old {
		old[i].blk.Free()
	}
}

// reset empties the table and returns its memory.
func (t *table) reset() {
	t.slotsBlk.Free()
	for i := range t.chunks {
		t.chunks[i].blk.Free()
	}
	*t = table{}
}
