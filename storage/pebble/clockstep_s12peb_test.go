package pebble

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/idemhq/idem/storage"
)

// hookClock is a fake clock whose Now runs a hook once, on the call the
// test arms it for, so a test can step the clock back between a reader of
// the clock and what that reader does next.
type hookClock struct {
	*clockwork.FakeClock
	mu   sync.Mutex
	hook func()
}

func (c *hookClock) Now() time.Time {
	c.mu.Lock()
	h := c.hook
	c.hook = nil
	c.mu.Unlock()
	t := c.FakeClock.Now()
	if h != nil {
		h()
	}
	return t
}

// TestSweepAfterClockStepsBackKeepsLiveRecord: the sweep read the clock
// once per step, before it took any stripe. An NTP step back right after
// that read let a Reserve create a record whose expires_at was before the
// sweep's stale now; the sweep then deleted that live IN_PROGRESS record,
// and the next Reserve handed the key out again with token 1.
func TestSweepAfterClockStepsBackKeepsLiveRecord(t *testing.T) {
	ctx := testCtx(t)
	clock := &hookClock{FakeClock: clockwork.NewFakeClockAt(epoch)}
	s := openTest(t, t.TempDir(), clock)
	defer s.Close()
	p := storage.ReserveParams{ID: storage.ID{Tenant: "t", Namespace: "ns", Key: "k"}, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Minute}
	clock.mu.Lock()
	clock.hook = func() {
		// The sweep has just read epoch; the clock steps back an hour and
		// a Reserve runs before the sweep goes on.
		clock.Advance(-time.Hour)
		if out, _, err := s.Reserve(ctx, p); err != nil || out != storage.OutcomeReserved {
			t.Errorf("Reserve() after the step = %v, %v; want RESERVED", out, err)
		}
	}
	clock.mu.Unlock()
	if n, err := s.Sweep(ctx); err != nil || n != 0 {
		t.Errorf("Sweep() = %d, %v; want 0 deleted (the record is live)", n, err)
	}
	if _, err := s.Lookup(ctx, p.ID); errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Lookup() after the sweep error = %v, want the live record", err)
	}
	if out, _, err := s.Reserve(ctx, p); err != nil || out != storage.OutcomeInProgress {
		t.Errorf("second Reserve() = %v, %v; want IN_PROGRESS", out, err)
	}
	if got := countPrefix(t, s, prefixExpiry); got != 1 {
		t.Errorf("expiry index entries = %d, want 1", got)
	}
}
