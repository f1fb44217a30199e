package pebble

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/storagetest"
)

func TestKeyFilter(t *testing.T) {
	const n = 100_000
	f := newKeyFilter(n)
	rng := rand.New(rand.NewPCG(1, 2))
	in := make([]uint64, n)
	for i := range in {
		in[i] = rng.Uint64()
		f.add(in[i])
	}
	for _, h := range in {
		if !f.mayContain(h) {
			t.Fatalf("mayContain(%#x) = false for an added hash", h)
		}
	}
	fp := 0
	for range n {
		if f.mayContain(rng.Uint64()) {
			fp++
		}
	}
	// Sized for n at 16 bits a key: about 0.1% false positives.
	if rate := float64(fp) / n; rate > 0.005 {
		t.Errorf("false positive rate at capacity = %.4f, want < 0.005", rate)
	}
	if got := f.count.Load(); got != n {
		t.Errorf("count = %d, want %d", got, n)
	}
}

// smallFilterHarness runs the conformance suite with a filter that fills
// after a few keys, so its rebuilds race the suite's writers.
type smallFilterHarness struct{}

func (smallFilterHarness) MakeStore(ctx context.Context, t *testing.T) (storage.Store, storagetest.Clock) {
	clock := clockwork.NewFakeClockAt(epoch)
	s, err := Open(t.TempDir(), WithClock(clock), WithSweepInterval(time.Second), withFilterMinKeys(4))
	if err != nil {
		t.Fatalf("Open() error = %v", err)
	}
	return s, clock
}

func (smallFilterHarness) MakeBenchStore(ctx context.Context, b *testing.B) storage.Store {
	b.Skip("the small filter is for correctness only")
	return nil
}

func TestConformanceSmallFilter(t *testing.T) {
	storagetest.RunConformanceTests(t, smallFilterHarness{})
}

// waitFilter waits until a filter answers and no scan runs.
func waitFilter(t *testing.T, s *Store) {
	t.Helper()
	deadline := time.Now().Add(defaultTestTimeout)
	for s.pres.live.Load() == nil || s.pres.building.Load() {
		if time.Now().After(deadline) {
			t.Fatal("presence filter not built in time")
		}
		time.Sleep(time.Millisecond)
	}
}

func reserveN(ctx context.Context, t *testing.T, s *Store, prefix string, n int) []storage.Outcome {
	t.Helper()
	out := make([]storage.Outcome, n)
	for i := range n {
		o, _, err := s.Reserve(ctx, storage.ReserveParams{
			ID:       storage.ID{Tenant: "t", Namespace: "ns", Key: fmt.Sprintf("%s-%d", prefix, i)},
			LeaseTTL: time.Minute, Retention: time.Hour,
		})
		if err != nil {
			t.Fatalf("Reserve(%s-%d) error = %v", prefix, i, err)
		}
		out[i] = o
	}
	return out
}

func TestPresenceFilterSkipsReadsOfNewKeys(t *testing.T) {
	ctx := testCtx(t)
	s := openTest(t, t.TempDir(), clockwork.NewFakeClockAt(epoch))
	defer s.Close()
	waitFilter(t, s)
	before := s.pres.skipped.Load()
	for i, o := range reserveN(ctx, t, s, "k", 100) {
		if o != storage.OutcomeReserved {
			t.Fatalf("first Reserve(k-%d) = %v, want RESERVED", i, o)
		}
	}
	if got := s.pres.skipped.Load() - before; got < 99 {
		t.Errorf("filter answered %d of 100 reads of new keys, want about all", got)
	}
	before = s.pres.skipped.Load()
	for i, o := range reserveN(ctx, t, s, "k", 100) {
		if o != storage.OutcomeInProgress {
			t.Fatalf("second Reserve(k-%d) = %v, want IN_PROGRESS", i, o)
		}
	}
	if got := s.pres.skipped.Load() - before; got != 0 {
		t.Errorf("filter answered %d reads of stored keys, want 0", got)
	}
}

func TestPresenceFilterKnowsKeysAfterReopen(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	clock := clockwork.NewFakeClockAt(epoch)
	s := openTest(t, dir, clock)
	reserveN(ctx, t, s, "k", 500)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, WithClock(clock), WithSweepInterval(0), withFilterMinKeys(64))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	waitFilter(t, s)
	for i, o := range reserveN(ctx, t, s, "k", 500) {
		if o != storage.OutcomeInProgress {
			t.Fatalf("Reserve(k-%d) after reopen = %v, want IN_PROGRESS", i, o)
		}
	}
	// The scan at start found 500 keys, more than 64: it was followed by a
	// rebuild sized for them.
	waitFilter(t, s)
	if got := s.pres.live.Load().capacity; got < 500 {
		t.Errorf("filter capacity after start = %d, want at least the 500 stored keys", got)
	}
}

// TestPresenceFilterRebuildsUnderWriters writes new keys from many
// goroutines through many rebuilds, then checks no key is ever taken for
// new again: a rebuild that missed a concurrent write would answer RESERVED.
func TestPresenceFilterRebuildsUnderWriters(t *testing.T) {
	ctx := testCtx(t)
	s, err := Open(t.TempDir(), WithClock(clockwork.NewFakeClockAt(epoch)), WithSweepInterval(0), withFilterMinKeys(16))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const writers, each = 16, 250
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i, o := range reserveN(ctx, t, s, fmt.Sprintf("w%d", w), each) {
				if o != storage.OutcomeReserved {
					t.Errorf("first Reserve(w%d-%d) = %v, want RESERVED", w, i, o)
				}
			}
		})
	}
	wg.Wait()
	waitFilter(t, s)
	if got := s.pres.rebuilds.Load(); got < 3 {
		t.Errorf("rebuilds = %d, want several with a filter of 16 keys", got)
	}
	for w := range writers {
		for i, o := range reserveN(ctx, t, s, fmt.Sprintf("w%d", w), each) {
			if o != storage.OutcomeInProgress {
				t.Fatalf("second Reserve(w%d-%d) = %v, want IN_PROGRESS", w, i, o)
			}
		}
	}
}

func TestPresenceFilterKeysComeBackAfterDelete(t *testing.T) {
	ctx := testCtx(t)
	s := openTest(t, t.TempDir(), clockwork.NewFakeClockAt(epoch))
	defer s.Close()
	waitFilter(t, s)
	reserveN(ctx, t, s, "k", 1)
	if _, err := s.Delete(ctx, storage.ID{Tenant: "t", Namespace: "ns", Key: "k-0"}); err != nil {
		t.Fatal(err)
	}
	if o := reserveN(ctx, t, s, "k", 1)[0]; o != storage.OutcomeReserved {
		t.Errorf("Reserve after Delete = %v, want RESERVED", o)
	}
}

func TestKeyFilterSizeIsCapped(t *testing.T) {
	f := newKeyFilter(4 * maxFilterKeys)
	defer f.free()
	if f.capacity != maxFilterKeys || len(f.blocks)*64 != 1<<30 {
		t.Errorf("filter for 4× the cap: capacity %d, %d bytes; want %d keys in 1 GiB", f.capacity, len(f.blocks)*64, maxFilterKeys)
	}
	if g := newKeyFilter(100); g.capacity != 100 || len(g.blocks) < 100*filterBitsPerKey/512 {
		t.Errorf("filter for 100 keys: capacity %d, %d blocks", g.capacity, len(g.blocks))
	}
}

// TestPresenceFilterRetriesAFailedFirstScan makes the first scan fail: reads
// go to Pebble (answers stay right) and a later scan builds the filter.
func TestPresenceFilterRetriesAFailedFirstScan(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	clock := clockwork.NewFakeClockAt(epoch)
	s := openTest(t, dir, clock)
	reserveN(ctx, t, s, "k", 10)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	var fails atomic.Int32
	fails.Store(1)
	scan, retry := scanFilterKeys, filterRetry
	scanFilterKeys = func(s *Store, ctx context.Context, f *keyFilter) error {
		if fails.Add(-1) >= 0 {
			return errors.New("injected scan failure")
		}
		return scan(s, ctx, f)
	}
	filterRetry = 50 * time.Millisecond
	t.Cleanup(func() { scanFilterKeys, filterRetry = scan, retry })

	s = openTest(t, dir, clock)
	defer s.Close()
	for i, o := range reserveN(ctx, t, s, "k", 10) {
		if o != storage.OutcomeInProgress {
			t.Fatalf("Reserve(k-%d) with no filter = %v, want IN_PROGRESS", i, o)
		}
	}
	waitFilter(t, s)
	if got := s.pres.rebuilds.Load(); got != 1 {
		t.Errorf("filters built = %d, want 1 (after the retry)", got)
	}
	for i, o := range reserveN(ctx, t, s, "k", 10) {
		if o != storage.OutcomeInProgress {
			t.Fatalf("Reserve(k-%d) with the filter = %v, want IN_PROGRESS", i, o)
		}
	}
}
