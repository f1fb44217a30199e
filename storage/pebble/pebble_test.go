package pebble

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/jonboulle/clockwork"

	"github.com/idemhq/idem/internal/testenv"
	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/storagetest"
)

const defaultTestTimeout = 30 * time.Second

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)

type harness struct{}

func (harness) MakeStore(ctx context.Context, t *testing.T) (storage.Store, storagetest.Clock) {
	clock := clockwork.NewFakeClockAt(epoch)
	s, err := Open(t.TempDir(), WithClock(clock), WithSweepInterval(time.Second))
	if err != nil {
		t.Fatalf("Open() error = %v", err)
	}
	return s, clock
}

func (harness) MakeBenchStore(ctx context.Context, b *testing.B) storage.Store {
	s, err := Open(b.TempDir())
	if err != nil {
		b.Fatalf("Open() error = %v", err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

func (harness) Damage(ctx context.Context, t *testing.T, st storage.Store, id storage.ID) {
	damage(t, st.(*Store), id)
}

func TestConformance(t *testing.T) {
	storagetest.RunConformanceTests(t, harness{})
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

func openTest(t *testing.T, dir string, clock clockwork.Clock) *Store {
	t.Helper()
	s, err := Open(dir, WithClock(clock), WithSweepInterval(0))
	if err != nil {
		t.Fatalf("Open(%s) error = %v", dir, err)
	}
	return s
}

func TestOpenURL(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	t.Chdir(dir)
	for _, tc := range []struct {
		url, dir string
	}{
		{"pebble://./idem-data", "./idem-data"},
		{"pebble://idem-rel", "idem-rel"},
		{"pebble://rel/nested", "rel/nested"},
		{"pebble://" + dir + "/abs", dir + "/abs"},
		{"pebble:opaque-dir", "opaque-dir"},
		{"pebble://./coalesced?coalesce=4", "./coalesced"},
		{"pebble://./ring?sync=io_uring", "./ring"},
		{"pebble://./blocking?coalesce=2&sync=fdatasync", "./blocking"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			s, err := storage.Open(ctx, tc.url, storage.OpenOptions{})
			if err != nil {
				t.Fatalf("Open(%s) error = %v, want nil", tc.url, err)
			}
			ps, ok := s.(*Store)
			if !ok {
				t.Fatalf("Open(%s) = %T, want *pebble.Store", tc.url, s)
			}
			if ps.dir != tc.dir {
				t.Errorf("Open(%s) dir = %q, want %q", tc.url, ps.dir, tc.dir)
			}
			if strings.Contains(tc.url, "sync=fdatasync") && ps.ring != nil {
				t.Errorf("Open(%s) syncs through io_uring, want blocking calls", tc.url)
			}
			if err := s.Ping(ctx); err != nil {
				t.Errorf("Ping() error = %v, want nil", err)
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close() error = %v, want nil", err)
			}
		})
	}
	for bad, want := range map[string]string{
		"pebble://": "", "pebble://./data?cache=1": "cache", "pebble://./data?coalesce=-1": "coalesce",
		"pebble://./data?coalesce=x": "coalesce", "pebble://./data?sync=fsync": "fsync",
		// An empty value is a typo, not "the default".
		"pebble://./data?coalesce=": "coalesce", "pebble://./data?sync=": "sync",
		"pebble://./data?coalesce=1&colesce=2": "colesce",
		// No shell expands ~ inside a URL: it would be a directory named ~.
		"pebble://~/data": "~", "pebble:~/data": "~",
	} {
		if s, err := storage.Open(ctx, bad, storage.OpenOptions{}); err == nil {
			s.Close()
			t.Errorf("Open(%s) error = nil, want an error", bad)
		} else if !strings.HasPrefix(err.Error(), "idem: pebble store URL") || !strings.Contains(err.Error(), want) {
			t.Errorf("Open(%s) error = %q, want it to start with \"idem: pebble store URL\" and name %q", bad, err, want)
		}
	}
	if _, err := os.Stat("~"); err == nil {
		t.Errorf("a directory named ~ was created")
	}
}

// TestCoalescedCommits checks that concurrent Reserves and Completes share
// synced commits when coalescing is on, and commit one by one when it is
// off, with the same answers either way.
func TestCoalescedCommits(t *testing.T) {
	ctx := testCtx(t)
	for _, tc := range []struct {
		coalesce int
		shared   bool
	}{{0, false}, {1, true}} {
		t.Run(fmt.Sprintf("coalesce=%d", tc.coalesce), func(t *testing.T) {
			s, err := Open(t.TempDir(), WithSweepInterval(0), WithCoalesce(tc.coalesce))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			const n = 200
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := range n {
				wg.Go(func() {
					id := storage.ID{Namespace: "ns", Key: fmt.Sprintf("k%d", i)}
					out, rec, err := s.Reserve(ctx, storage.ReserveParams{ID: id, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour})
					if err == nil && (out != storage.OutcomeReserved || rec.ID != id) {
						err = fmt.Errorf("Reserve(%s) = %v, %+v", id.Key, out, rec)
					}
					if err == nil {
						rec, err = s.Complete(ctx, storage.CompleteParams{ID: id, Token: rec.Token, Result: &storage.Result{Body: []byte(id.Key)}, Retention: time.Hour})
					}
					if err == nil && string(rec.Result.Body) != id.Key {
						err = fmt.Errorf("Complete(%s) answered %+v", id.Key, rec)
					}
					errs <- err
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			commits := s.commits.Load()
			if shared := commits < 2*n; shared != tc.shared {
				t.Errorf("%d Reserves and Completes made %d synced commits; shared = %v, want %v", 2*n, commits, shared, tc.shared)
			}
			t.Logf("%d calls, %d synced commits", 2*n, commits)
		})
	}
}

// TestSyncModes checks that by default every sync of the store goes
// through the io_uring (where the kernel offers one), and that
// SyncFdatasync keeps it out; both keep acknowledged writes across a
// reopen (TestReopenKeepsAcknowledgedWrites runs under each).
func TestSyncModes(t *testing.T) {
	ctx := testCtx(t)
	s, err := Open(t.TempDir(), WithSweepInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	if s.ring == nil {
		s.Close()
		if testenv.InCI() {
			t.Fatal("the store syncs with blocking calls; CI's machines offer io_uring")
		}
		t.Skip("no io_uring here: the store syncs with blocking calls")
	}
	before := s.ring.syncs.Load()
	for i := range 10 {
		id := storage.ID{Namespace: "ns", Key: fmt.Sprintf("k%d", i)}
		if _, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.ring.syncs.Load() - before; got < 10 {
		t.Errorf("10 Reserves one after another ran %d syncs through the ring, want at least 10", got)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close() error = %v", err)
	}

	if _, err := Open(t.TempDir(), WithSync("fsync")); err == nil || !strings.Contains(err.Error(), "sync must be") {
		t.Errorf("Open(WithSync(\"fsync\")) error = %v, want one naming the sync modes", err)
	}

	s, err = Open(t.TempDir(), WithSweepInterval(0), WithSync(SyncFdatasync))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.ring != nil {
		t.Error("Open(WithSync(SyncFdatasync)) syncs through io_uring, want blocking calls")
	}
}

func TestReopenKeepsAcknowledgedWrites(t *testing.T) {
	for _, mode := range []Sync{SyncIOUring, SyncFdatasync} {
		t.Run(string(mode), func(t *testing.T) { testReopenKeepsAcknowledgedWrites(t, mode) })
	}
}

func testReopenKeepsAcknowledgedWrites(t *testing.T, mode Sync) {
	ctx := testCtx(t)
	dir := t.TempDir()
	clock := clockwork.NewFakeClockAt(epoch)
	open := func() *Store {
		t.Helper()
		s, err := Open(dir, WithClock(clock), WithSweepInterval(0), WithSync(mode))
		if err != nil {
			t.Fatalf("Open(%s) error = %v", dir, err)
		}
		return s
	}
	s := open()
	res := &storage.Result{
		Code: 3, Message: "bad", Body: []byte{0, 1, 2, 0xFF},
		Details:  []storage.Detail{{TypeURL: "type.googleapis.com/x.Y", Value: []byte("v")}},
		Metadata: map[string]string{"a": "1", "b": ""},
	}
	want := map[string]*storage.Record{}
	for i := range 50 {
		id := storage.ID{Tenant: "t", Namespace: "ns", Key: fmt.Sprintf("k%03d", i)}
		_, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour})
		if err != nil {
			t.Fatalf("Reserve() error = %v", err)
		}
		var rec *storage.Record
		switch i % 3 {
		case 0:
			rec, err = s.Complete(ctx, storage.CompleteParams{ID: id, Token: 1, Result: res, Retention: time.Hour})
		case 1:
			rec, err = s.Checkpoint(ctx, id, 1, storage.Checkpoint{Phase: "charged", Data: []byte{9}})
		case 2:
			rec, err = s.Release(ctx, id, 1)
		}
		if err != nil {
			t.Fatalf("op %d error = %v", i%3, err)
		}
		want[id.Key] = rec
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close() error = %v", err)
	}
	s = open()
	defer s.Close()
	for k, w := range want {
		got, err := s.Lookup(ctx, w.ID)
		if err != nil {
			t.Fatalf("Lookup(%s) after reopen error = %v", k, err)
		}
		if !recordsEqual(got, w) {
			t.Errorf("Lookup(%s) after reopen = %+v, want %+v", k, got, w)
		}
	}
}

func TestSweep(t *testing.T) {
	ctx := testCtx(t)
	clock := clockwork.NewFakeClockAt(epoch)
	s, err := Open(t.TempDir(), WithClock(clock), WithSweepInterval(0), WithSweepBatch(7))
	if err != nil {
		t.Fatalf("Open() error = %v", err)
	}
	defer s.Close()
	reserve := func(key string, retention time.Duration) {
		t.Helper()
		id := storage.ID{Tenant: "t", Namespace: "ns", Key: key}
		if _, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id, Fingerprint: []byte("fp"), LeaseTTL: time.Second, Retention: retention}); err != nil {
			t.Fatalf("Reserve(%s) error = %v", key, err)
		}
	}
	for i := range 30 {
		reserve(fmt.Sprintf("short-%02d", i), time.Minute)
		reserve(fmt.Sprintf("long-%02d", i), time.Hour)
	}
	// A short record taken over after its lease ended now lives longer:
	// its first expiry entry is stale and must not delete it.
	clock.Advance(2 * time.Second)
	extended := storage.ID{Tenant: "t", Namespace: "ns", Key: "short-00"}
	if out, _, err := s.Reserve(ctx, storage.ReserveParams{ID: extended, Fingerprint: []byte("fp"), LeaseTTL: time.Second, Retention: 2 * time.Hour}); err != nil || out != storage.OutcomeReserved {
		t.Fatalf("takeover Reserve() = %v, %v; want RESERVED", out, err)
	}

	if n, err := s.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("Sweep() before expiry = %d, %v; want 0, nil", n, err)
	}
	clock.Advance(time.Minute)
	n, err := s.Sweep(ctx)
	if err != nil || n != 29 {
		t.Fatalf("Sweep() = %d, %v; want 29, nil", n, err)
	}
	if got := s.Swept(); got != 29 {
		t.Errorf("Swept() = %d, want 29", got)
	}
	for i := range 30 {
		for _, p := range []string{"short", "long"} {
			key := fmt.Sprintf("%s-%02d", p, i)
			_, err := s.Lookup(ctx, storage.ID{Tenant: "t", Namespace: "ns", Key: key})
			wantLive := p == "long" || i == 0
			if wantLive && err != nil {
				t.Errorf("Lookup(%s) after sweep error = %v, want the record", key, err)
			}
			if !wantLive && !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("Lookup(%s) after sweep error = %v, want ErrNotFound", key, err)
			}
			raw, err := s.get(recordKey(storage.ID{Tenant: "t", Namespace: "ns", Key: key}))
			if err != nil {
				t.Fatalf("get(%s) error = %v", key, err)
			}
			if (raw != nil) != wantLive {
				t.Errorf("record %s physically present = %v, want %v", key, raw != nil, wantLive)
			}
		}
	}
	if got := countPrefix(t, s, prefixExpiry); got != 31 {
		t.Errorf("expiry index entries = %d, want 31 (one per live record)", got)
	}
	clock.Advance(3 * time.Hour)
	if n, err := s.Sweep(ctx); err != nil || n != 31 {
		t.Fatalf("Sweep() after everything expired = %d, %v; want 31, nil", n, err)
	}
	if got := countPrefix(t, s, prefixRecord) + countPrefix(t, s, prefixExpiry); got != 0 {
		t.Errorf("records and index entries left = %d, want 0", got)
	}
}

func TestBackgroundSweep(t *testing.T) {
	ctx := testCtx(t)
	clock := clockwork.NewFakeClockAt(epoch)
	s, err := Open(t.TempDir(), WithClock(clock), WithSweepInterval(time.Minute))
	if err != nil {
		t.Fatalf("Open() error = %v", err)
	}
	defer s.Close()
	id := storage.ID{Tenant: "t", Namespace: "ns", Key: "k"}
	if _, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id, Fingerprint: []byte("fp"), LeaseTTL: time.Second, Retention: time.Second}); err != nil {
		t.Fatalf("Reserve() error = %v", err)
	}
	if err := clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatalf("sweeper never waited on the clock: %v", err)
	}
	clock.Advance(time.Minute)
	for s.Swept() != 1 {
		select {
		case <-ctx.Done():
			t.Fatalf("Swept() = %d, want 1 after the sweep interval", s.Swept())
		case <-time.After(time.Millisecond):
		}
	}
}

func countPrefix(t *testing.T, s *Store, prefix byte) int {
	t.Helper()
	it, err := s.db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		if it.Key()[0] == prefix {
			n++
		}
	}
	return n
}

// TestSweepRacesWriters sweeps a store full of expired records while
// writers re-create the same keys: the sweep must delete only what is still
// expired under the lock, so every record a writer got RESERVED survives.
func TestSweepRacesWriters(t *testing.T) {
	ctx := testCtx(t)
	clock := clockwork.NewFakeClockAt(epoch)
	s, err := Open(t.TempDir(), WithClock(clock), WithSweepInterval(0), WithSweepBatch(50))
	if err != nil {
		t.Fatalf("Open() error = %v", err)
	}
	defer s.Close()
	const n = 2000
	params := func(i int) storage.ReserveParams {
		return storage.ReserveParams{ID: storage.ID{Tenant: "t", Namespace: "ns", Key: fmt.Sprintf("k%05d", i)},
			Fingerprint: []byte("fp"), LeaseTTL: time.Second, Retention: time.Minute}
	}
	items := make([]storage.ReserveParams, n)
	for i := range items {
		items[i] = params(i)
	}
	if _, err := s.BatchReserve(ctx, items); err != nil {
		t.Fatalf("BatchReserve() error = %v", err)
	}
	clock.Advance(2 * time.Minute)
	done := make(chan error, 1)
	go func() {
		_, err := s.Sweep(ctx)
		done <- err
	}()
	errs := make(chan error, 4)
	for w := range 4 {
		go func() {
			for i := w; i < n; i += 4 {
				if out, _, err := s.Reserve(ctx, params(i)); err != nil || out != storage.OutcomeReserved {
					errs <- fmt.Errorf("Reserve(%d) = %v, %v; want RESERVED", i, out, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("Sweep() error = %v", err)
	}
	for i := range n {
		if _, err := s.Lookup(ctx, params(i).ID); err != nil {
			t.Fatalf("Lookup(%d) after the race error = %v, want the re-reserved record", i, err)
		}
	}
	if got := countPrefix(t, s, prefixExpiry); got != n {
		t.Errorf("expiry index entries = %d, want %d", got, n)
	}
	if got := s.Swept(); got > n {
		t.Errorf("Swept() = %d, want at most %d", got, n)
	}
}

// TestSweepRechecksUnderLock replays the sweep's race step by step: the
// sweep has read an expiry entry, then a Reserve re-creates the expired
// record, then the sweep processes its entry. The new record must stay.
func TestSweepRechecksUnderLock(t *testing.T) {
	ctx := testCtx(t)
	clock := clockwork.NewFakeClockAt(epoch)
	s := openTest(t, t.TempDir(), clock)
	defer s.Close()
	p := storage.ReserveParams{ID: storage.ID{Tenant: "t", Namespace: "ns", Key: "k"}, Fingerprint: []byte("fp"), LeaseTTL: time.Second, Retention: time.Minute}
	if _, _, err := s.Reserve(ctx, p); err != nil {
		t.Fatalf("Reserve() error = %v", err)
	}
	clock.Advance(2 * time.Minute)
	now := s.now()
	entries, err := s.dueEntries(ctx, now, nil, 10)
	if err != nil || len(entries) != 1 {
		t.Fatalf("dueEntries() = %d entries, %v; want 1", len(entries), err)
	}
	if out, _, err := s.Reserve(ctx, p); err != nil || out != storage.OutcomeReserved {
		t.Fatalf("Reserve() of the expired key = %v, %v; want RESERVED", out, err)
	}
	n, _, err := s.sweepChunk(entries, now)
	if err != nil || n != 0 {
		t.Fatalf("sweepChunk() = %d, %v; want 0 deleted", n, err)
	}
	if _, err := s.Lookup(ctx, p.ID); err != nil {
		t.Errorf("Lookup() after the sweep error = %v, want the re-created record", err)
	}
	if got := countPrefix(t, s, prefixExpiry); got != 1 {
		t.Errorf("expiry index entries = %d, want 1", got)
	}
}

// TestSweepHoldsFilterLock: the sweep's reads consult the presence
// filter, which a rebuild frees once it holds pres.mu alone, so the sweep
// must wait while pres.mu is held exclusively instead of reading on.
func TestSweepHoldsFilterLock(t *testing.T) {
	ctx := testCtx(t)
	clock := clockwork.NewFakeClockAt(epoch)
	s, err := Open(t.TempDir(), WithClock(clock), WithSweepInterval(0), withFilterMinKeys(1))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p := storage.ReserveParams{ID: storage.ID{Tenant: "t", Namespace: "ns", Key: "k"}, LeaseTTL: time.Second, Retention: time.Second}
	if _, _, err := s.Reserve(ctx, p); err != nil {
		t.Fatal(err)
	}
	waitFilter(t, s)
	clock.Advance(time.Minute)
	s.pres.mu.Lock() // what a rebuild holds while it frees the old filter
	done := make(chan struct{})
	go func() {
		defer close(done)
		if n, err := s.Sweep(ctx); err != nil || n != 1 {
			t.Errorf("Sweep() = %d, %v; want 1 deleted", n, err)
		}
	}()
	select {
	case <-done:
		t.Error("Sweep read the store while pres.mu was held exclusively")
	case <-time.After(time.Second):
	}
	s.pres.mu.Unlock()
	<-done
}

// TestSweepSkipsBusyStripes: a writer holds its record's stripe until its
// batch is synced. The sweep must not wait for it (holding the stripes it
// already has, it would stall their writers too): it deletes what it can
// reach and leaves the busy record for the next sweep.
func TestSweepSkipsBusyStripes(t *testing.T) {
	ctx := testCtx(t)
	clock := clockwork.NewFakeClockAt(epoch)
	s := openTest(t, t.TempDir(), clock)
	defer s.Close()
	const n = 50
	items := make([]storage.ReserveParams, n)
	for i := range items {
		items[i] = storage.ReserveParams{ID: storage.ID{Tenant: "t", Namespace: "ns", Key: fmt.Sprintf("k%d", i)}, LeaseTTL: time.Second, Retention: time.Second}
	}
	if _, err := s.BatchReserve(ctx, items); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	busy := s.lockFor(recordKey(items[n/2].ID))
	busy.Lock()
	sharing := 0 // records on the busy stripe
	for _, it := range items {
		if s.lockFor(recordKey(it.ID)) == busy {
			sharing++
		}
	}
	done := make(chan int, 1)
	go func() {
		got, err := s.Sweep(ctx)
		if err != nil {
			t.Errorf("Sweep() error = %v", err)
		}
		done <- got
	}()
	select {
	case got := <-done:
		if got != n-sharing {
			t.Errorf("Sweep() with one stripe busy deleted %d, want %d", got, n-sharing)
		}
	case <-time.After(10 * time.Second):
		busy.Unlock()
		t.Fatal("Sweep waited for a busy stripe")
	}
	busy.Unlock()
	if got, err := s.Sweep(ctx); err != nil || got != sharing {
		t.Errorf("next Sweep() = %d, %v; want %d deleted", got, err, sharing)
	}
	if got := countPrefix(t, s, prefixExpiry); got != 0 {
		t.Errorf("expiry index entries = %d, want 0", got)
	}
}

// TestScansSyncWhatTheySaw: Pebble makes a batch readable before its sync
// ends, and List and Stats read without stripe locks, so before answering
// with records they sync the log; a scan that found nothing, with no Delete
// unsynced (TestEmptyScanWaitsForUnsyncedDelete), needs no sync.
func TestScansSyncWhatTheySaw(t *testing.T) {
	ctx := testCtx(t)
	s, err := Open(t.TempDir(), WithSweepInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.ring == nil {
		if testenv.InCI() {
			t.Fatal("the store syncs with blocking calls; CI's machines offer io_uring")
		}
		t.Skip("no io_uring here: the store's syncs cannot be counted")
	}
	id := storage.ID{Tenant: "t", Namespace: "ns", Key: "k"}
	if _, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		scan  func() (int, error)
		syncs bool
	}{
		{"List", func() (int, error) {
			recs, _, err := s.List(ctx, storage.ListParams{Tenant: "t", Namespace: "ns", Limit: 10})
			return len(recs), err
		}, true},
		{"Stats", func() (int, error) { rows, err := s.Stats(ctx, "t", ""); return len(rows), err }, true},
		{"List of an empty namespace", func() (int, error) {
			recs, _, err := s.List(ctx, storage.ListParams{Tenant: "t", Namespace: "other", Limit: 10})
			return len(recs), err
		}, false},
	} {
		before := s.ring.syncs.Load()
		n, err := tt.scan()
		if err != nil {
			t.Fatalf("%s error = %v", tt.name, err)
		}
		if got := s.ring.syncs.Load() > before; got != tt.syncs || (n > 0) != tt.syncs {
			t.Errorf("%s found %d and synced = %v, want synced = %v", tt.name, n, got, tt.syncs)
		}
	}
}

// holdFS holds the syncs of Pebble's log while gate is set, as a slow disk
// would, and signals on held when a sync starts to wait.
type holdFS struct {
	vfs.FS
	gate atomic.Pointer[chan struct{}]
	held chan struct{}
}

func (fs *holdFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return holdFile{File: f, fs: fs}, nil
}

func (fs *holdFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return fs.wrap(name, f, err)
}

func (fs *holdFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, c)
	return fs.wrap(newname, f, err)
}

type holdFile struct {
	vfs.File
	fs *holdFS
}

func (f holdFile) Sync() error     { f.wait(); return f.File.Sync() }
func (f holdFile) SyncData() error { f.wait(); return f.File.SyncData() }

func (f holdFile) wait() {
	if g := f.fs.gate.Load(); g != nil {
		select {
		case f.fs.held <- struct{}{}:
		default:
		}
		<-*g
	}
}

// waitingIn reports true once a goroutine is inside the store method fn;
// false if ctx ends first.
func waitingIn(ctx context.Context, fn string) bool {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if strings.Contains(string(buf[:n]), "pebble.(*Store)."+fn+"(") {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Millisecond):
		}
	}
}

// TestEmptyScanWaitsForUnsyncedDelete: a Delete's batch is readable before
// its sync ends. A List or Stats that found nothing because of it answered
// at once, without the sync that a scan finding records makes, so a crash
// could then bring back a record the scan had reported gone. With a Delete
// in flight, a scan syncs before answering.
func TestEmptyScanWaitsForUnsyncedDelete(t *testing.T) {
	id := storage.ID{Tenant: "t", Namespace: "ns", Key: "k"}
	for _, tc := range []struct {
		name string
		scan func(ctx context.Context, s *Store) (int, error)
	}{
		{"List", func(ctx context.Context, s *Store) (int, error) {
			recs, _, err := s.List(ctx, storage.ListParams{Tenant: "t", Namespace: "ns", Limit: 10})
			return len(recs), err
		}},
		{"Stats", func(ctx context.Context, s *Store) (int, error) {
			rows, err := s.Stats(ctx, "t", "")
			return len(rows), err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			fs := &holdFS{held: make(chan struct{}, 1)}
			s, err := Open(t.TempDir(), WithSweepInterval(0), withFS(func(base vfs.FS) vfs.FS { fs.FS = base; return fs }))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour}); err != nil {
				t.Fatal(err)
			}
			gate := make(chan struct{})
			fs.gate.Store(&gate)
			release := sync.OnceFunc(func() { fs.gate.Store(nil); close(gate) })
			defer release()
			deleted := make(chan error, 1)
			go func() { _, err := s.Delete(ctx, id); deleted <- err }()
			select {
			case <-fs.held:
			case <-ctx.Done():
				t.Fatal("the Delete's sync never started")
			}
			type answer struct {
				n   int
				err error
			}
			scanned := make(chan answer, 1)
			go func() { n, err := tc.scan(ctx, s); scanned <- answer{n, err} }()
			waiting := make(chan bool, 1)
			wctx, stop := context.WithCancel(ctx)
			defer stop()
			go func() { waiting <- waitingIn(wctx, "syncSeen") }()
			select {
			case a := <-scanned:
				t.Fatalf("%s answered %d (error = %v) while the Delete it saw was not yet synced; want it to sync first", tc.name, a.n, a.err)
			case ok := <-waiting:
				if !ok {
					t.Fatalf("%s neither answered nor synced", tc.name)
				}
			}
			release()
			if err := <-deleted; err != nil {
				t.Fatalf("Delete() error = %v", err)
			}
			if a := <-scanned; a.err != nil || a.n != 0 {
				t.Errorf("%s after the Delete = %d, %v; want nothing", tc.name, a.n, a.err)
			}
		})
	}
}
