package pebble

import (
	"context"
	"fmt"
	"testing"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/jonboulle/clockwork"

	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/storagetest"
)

// TestStress runs storagetest.Stress with a presence filter that fills
// after a few keys, a small memtable and a short sweep interval and batch,
// so filter rebuilds, flushes and sweeps race the writers. Between sweeps
// it checks that the filter never calls a stored key absent.
// IDEM_STRESS=5m runs each case for five minutes.
func TestStress(t *testing.T) {
	d := storagetest.StressDuration(t, 2*time.Second)
	for _, co := range []int{1, 0} {
		t.Run(fmt.Sprintf("coalesce=%d", co), func(t *testing.T) {
			clock := clockwork.NewFakeClockAt(epoch)
			s, err := Open(t.TempDir(), WithClock(clock), WithCoalesce(co),
				WithSweepInterval(20*time.Millisecond), WithSweepBatch(32), withFilterMinKeys(64),
				func(o *options) { o.memTableSize = 256 << 10 })
			if err != nil {
				t.Fatalf("Open() error = %v", err)
			}
			defer s.Close()
			ctx, cancel := context.WithTimeout(context.Background(), d+time.Minute)
			defer cancel()
			sweeps := 0
			n := storagetest.Stress(t, storagetest.StressConfig{
				Store:    s,
				Clock:    clock,
				Duration: d,
				Sweep: func() error {
					if _, err := s.Sweep(ctx); err != nil {
						return err
					}
					if sweeps++; sweeps%8 != 0 {
						return nil
					}
					return s.checkFilter()
				},
			})
			if err := s.checkFilter(); err != nil {
				t.Error(err)
			}
			if !t.Failed() {
				if got := countPrefix(t, s, prefixRecord); got != 0 {
					t.Errorf("after the last sweep %d records are still stored", got)
				}
				if got := countPrefix(t, s, prefixExpiry); got != 0 {
					t.Errorf("after the last sweep %d expiry entries are still stored", got)
				}
			}
			t.Logf("%d calls in %v, %d filter rebuilds, %d swept, %d synced commits", n, d, s.pres.rebuilds.Load(), s.Swept(), s.commits.Load())
		})
	}
}

// checkFilter reports a stored record key the presence filter calls
// absent. Holding pres.mu shared, as a write does, every committed key is
// in the filter that answers.
func (s *Store) checkFilter() error {
	s.pres.mu.RLock()
	defer s.pres.mu.RUnlock()
	it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: []byte{prefixRecord}, UpperBound: []byte{prefixRecord + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		if s.pres.absent(it.Key()) {
			return fmt.Errorf("presence filter calls stored key %q absent", it.Key())
		}
	}
	return it.Error()
}

// TestBatchAnswersOfOneRecordAreCopies: coalesced calls of one record run
// as one batch (BatchReserve, BatchComplete) holding the record twice, and
// each caller must get a record of its own. Stress found two Reserve
// callers sharing one.
func TestBatchAnswersOfOneRecordAreCopies(t *testing.T) {
	ctx := testCtx(t)
	s := openTest(t, t.TempDir(), clockwork.NewFakeClockAt(epoch))
	defer s.Close()
	p := storage.ReserveParams{ID: storage.ID{Tenant: "t", Namespace: "ns", Key: "k"}, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour}
	res, err := s.BatchReserve(ctx, []storage.ReserveParams{p, p})
	if err != nil {
		t.Fatalf("BatchReserve() error = %v", err)
	}
	if res[0].Record == res[1].Record {
		t.Errorf("BatchReserve of one record twice answered both with one *Record")
	}
	c := storage.CompleteParams{ID: p.ID, Token: 1, Result: &storage.Result{Body: []byte("r")}, Retention: time.Hour}
	done, err := s.BatchComplete(ctx, []storage.CompleteParams{c, c})
	if err != nil {
		t.Fatalf("BatchComplete() error = %v", err)
	}
	if done[0].Record == done[1].Record {
		t.Errorf("BatchComplete of one record twice answered both with one *Record")
	}
}
