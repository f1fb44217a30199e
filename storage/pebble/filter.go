package pebble

import (
	"context"
	"hash/maphash"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/idemhq/idem/storage/internal/offheap"
)

// Reserve of a new key is idem's hot path, and in Pebble a key that is not
// there still costs a seek in every memtable and a filter probe on every
// level: under load that read was about a quarter of the store's CPU per
// Reserve. The presence filter answers most of those reads from memory.
//
// It is a Bloom filter over the store's record keys: every key a scan of
// the store found, plus every key written since. It never forgets a key
// (a deleted or swept key stays set), so it may say "maybe" for a key that
// is gone, and a Get settles that, but it never says "absent" for a key
// that is there. When more keys went in than it was sized for, a
// background scan builds a fresh one, which also drops the deleted keys.

// filterBitsPerKey sizes a filter: 16 bits a key, 8 set per key in one
// 512-bit block, answer "maybe" for about 0.1% of absent keys.
const filterBitsPerKey = 16

// minFilterKeys is the smallest capacity a filter is built with (2 MiB),
// maxFilterKeys the largest (1 GiB): past it the filter answers "maybe"
// more often and more reads go to Pebble, which stays correct.
const (
	minFilterKeys = 1 << 20
	maxFilterKeys = 1 << 29
)

// filterRetry is how long after a failed first scan the next one starts.
var filterRetry = time.Minute

// scanFilterKeys fills a filter; tests replace it to make a scan fail.
var scanFilterKeys = (*Store).scanKeys

// presence holds the filter that answers reads and, during a rebuild, the
// one being filled.
type presence struct {
	// mu is held shared by every read-decide-write, from its read until
	// its batch is committed, and exclusively to install a filter about to
	// be filled by a scan: so the scan sees every key added before it
	// started, and every key added after goes into the new filter too.
	mu       sync.RWMutex
	live     atomic.Pointer[keyFilter] // answers reads; nil until the first scan ends
	next     atomic.Pointer[keyFilter] // being filled by a scan, or nil
	building atomic.Bool
	minKeys  int64

	rebuilds atomic.Uint64 // scans finished, for tests
	skipped  atomic.Uint64 // reads the filter answered, for tests
	seed     maphash.Seed
}

func (p *presence) hash(key []byte) uint64 { return maphash.Bytes(p.seed, key) }

// absent reports whether key is certainly not in the store.
func (p *presence) absent(key []byte) bool {
	f := p.live.Load()
	if f == nil || f.mayContain(p.hash(key)) {
		return false
	}
	p.skipped.Add(1)
	return true
}

// add records that key is about to be written; it reports the capacity a
// rebuild should have when the live filter is full and no rebuild runs
// (else 0). The caller holds mu shared until the write is committed.
func (p *presence) add(key []byte) int64 {
	h := p.hash(key)
	// next before live: a rebuild stores live before clearing next, so a
	// key lands in the new filter whichever of the two it sees.
	n := p.next.Load()
	f := p.live.Load()
	if n != nil {
		n.add(h)
	}
	if f == nil || f == n {
		return 0
	}
	if f.add(h) > f.capacity && f.capacity < maxFilterKeys && p.building.CompareAndSwap(false, true) {
		return max(p.minKeys, 2*f.count.Load())
	}
	return 0
}

// rebuild fills a new filter for capacity keys from a scan of the store in
// the background; the caller has set building.
func (s *Store) rebuild(capacity int64) {
	if !s.goBackground(func() { s.fill(newKeyFilter(capacity)) }) {
		s.pres.building.Store(false)
	}
}

func (s *Store) fill(f *keyFilter) {
	s.pres.mu.Lock()
	s.pres.next.Store(f)
	s.pres.mu.Unlock()
	if err := scanFilterKeys(s, s.stopCtx, f); err != nil {
		s.pres.next.Store(nil)
		s.retire(f)
		if s.stopCtx.Err() != nil {
			s.pres.building.Store(false)
			return
		}
		s.log.Error("idem: pebble presence filter scan failed; reads go to Pebble meanwhile", "dir", s.dir, "err", err)
		if s.pres.live.Load() != nil {
			// The old filter keeps answering; the next write past its
			// capacity tries again.
			s.pres.building.Store(false)
			return
		}
		// No filter answers and no write would start another scan: try
		// again in a while.
		capacity := f.capacity
		if !s.goBackground(func() {
			select {
			case <-s.stopCtx.Done():
				s.pres.building.Store(false)
			case <-time.After(filterRetry):
				s.fill(newKeyFilter(capacity))
			}
		}) {
			s.pres.building.Store(false)
		}
		return
	}
	old := s.pres.live.Swap(f)
	s.pres.next.Store(nil)
	s.retire(old)
	s.pres.rebuilds.Add(1)
	if n := f.count.Load(); n > f.capacity && f.capacity < maxFilterKeys {
		// The store held (or gained during the scan) more keys than
		// guessed: answer with this one while a right-sized one fills.
		s.rebuild(2 * n)
		return
	}
	s.pres.building.Store(false)
}

// scanKeys adds every record key of the store to f.
func (s *Store) scanKeys(ctx context.Context, f *keyFilter) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	it, err := s.db.NewIterWithContext(ctx, &pebbledb.IterOptions{
		LowerBound: []byte{prefixRecord},
		UpperBound: []byte{prefixRecord + 1},
	})
	if err != nil {
		return s.readErr(err)
	}
	defer it.Close()
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		f.add(s.pres.hash(it.Key()))
		if n++; n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}
	if err := it.Error(); err != nil {
		return s.readErr(err)
	}
	return nil
}

// keyFilter is a split-block Bloom filter: a key sets one bit in each of
// the eight words of one 64-byte block, so a probe touches one cache line.
// Bits are set and read atomically; concurrent adds and probes need no lock.
type keyFilter struct {
	blocks   [][8]atomic.Uint64
	mask     uint64
	capacity int64
	count    atomic.Int64
	free     func() // once no call can be reading blocks
}

func newKeyFilter(capacity int64) *keyFilter {
	capacity = min(capacity, maxFilterKeys)
	// The next power of two at or above the blocks needed.
	nblocks := uint64(1) << bits.Len64(uint64(max(1, capacity*filterBitsPerKey/512))-1)
	blocks, free := filterBlocks(nblocks)
	return &keyFilter{blocks: blocks, mask: nblocks - 1, capacity: capacity, free: free}
}

// retire frees filters no longer installed, after waiting out every call
// that may still be reading them: reads and adds happen under pres.mu
// shared.
func (s *Store) retire(fs ...*keyFilter) {
	s.pres.mu.Lock()
	s.pres.mu.Unlock() // nothing inside: taking the lock is the wait
	for _, f := range fs {
		if f != nil {
			f.free()
		}
	}
}

// salts spread one 32-bit hash over the eight words of a block.
var salts = [8]uint32{0x47b6137b, 0x44974d91, 0x8824ad5b, 0xa2b7289d, 0x705495c7, 0x2df1424b, 0x9efc4947, 0x5c6bfb31}

// add sets h's bits and returns how many keys went in.
func (f *keyFilter) add(h uint64) int64 {
	b := &f.blocks[(h>>32)&f.mask]
	x := uint32(h)
	for i := range b {
		b[i].Or(1 << ((x * salts[i]) >> 26))
	}
	return f.count.Add(1)
}

func (f *keyFilter) mayContain(h uint64) bool {
	b := &f.blocks[(h>>32)&f.mask]
	x := uint32(h)
	for i := range b {
		if b[i].Load()&(1<<((x*salts[i])>>26)) == 0 {
			return false
		}
	}
	return true
}

// filterEstimate sizes the first filter from the records' share of the
// disk at 128 bytes a record (a record with its key takes more), so a
// large store is seldom scanned twice at start; a low guess only costs
// one more scan.
func (s *Store) filterEstimate() int64 {
	n, err := s.db.EstimateDiskUsage([]byte{prefixRecord}, []byte{prefixRecord + 1})
	if err != nil {
		return s.pres.minKeys
	}
	return max(s.pres.minKeys, int64(n/128))
}

// FilterStats reports the presence filter's memory (the filter answering
// reads, and one being filled during a rebuild) and how many reads it has
// answered without Pebble since Open.
func (s *Store) FilterStats() (bytes int64, answered uint64) {
	for _, f := range []*keyFilter{s.pres.live.Load(), s.pres.next.Load()} {
		if f != nil {
			bytes += int64(len(f.blocks)) * 64
		}
	}
	return bytes, s.pres.skipped.Load()
}

// withFilterMinKeys sets the smallest filter capacity, so tests can make
// the filter fill and rebuild after a few keys.
func withFilterMinKeys(n int64) Option { return func(o *options) { o.filterMinKeys = n } }

// filterBlocks puts the filter's blocks outside the Go heap: with idemd's
// GC target of 400%, a 16 MiB filter on the heap cost about 80 MiB of RSS.
func filterBlocks(n uint64) ([][8]atomic.Uint64, func()) {
	blk := offheap.Alloc(int(n * uint64(unsafe.Sizeof([8]atomic.Uint64{}))))
	return unsafe.Slice((*[8]atomic.Uint64)(unsafe.Pointer(unsafe.SliceData(blk.B))), n), blk.Free
}
