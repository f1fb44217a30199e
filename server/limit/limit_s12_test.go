package limit

import (
	"context"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/idemhq/idem/server/auth"
)

// interleavingClock lets one other call run between a call's reading of
// the time and the rest of its work, as the scheduler may.
type interleavingClock struct {
	*clockwork.FakeClock
	between func() // run once, inside the next Now
}

func (c *interleavingClock) Now() time.Time {
	t := c.FakeClock.Now()
	if f := c.between; f != nil {
		c.between = nil
		f()
	}
	return t
}

// TestTenantRateHoldsWhenCallsInterleave: a call that read the time, then
// took the bucket after a later call did, moved the bucket's clock back,
// so the time between the two was credited twice and the tenant got more
// calls than its rate.
func TestTenantRateHoldsWhenCallsInterleave(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	fc := clockwork.NewFakeClock()
	clock := &interleavingClock{FakeClock: fc}
	l := New(Config{TenantRate: 1, TenantBurst: 2}, WithClock(clock))
	ctx = auth.NewContext(ctx, auth.Identity{Tenant: "a", Role: auth.RoleClient})
	admitted := 0
	call := func() {
		if done, err := l.Admit(ctx, "/idem.v1.IdempotencyService/Reserve", nil); err == nil {
			admitted++
			done()
		}
	}
	call()
	call() // the burst is spent
	admitted = 0
	fc.Advance(time.Second)
	later := false
	clock.between = func() {
		fc.Advance(time.Second)
		if !l.mu.TryLock() {
			later = true // the bucket is held: the other call cannot come between
			return
		}
		l.mu.Unlock()
		call()
	}
	call()
	if later {
		call()
	}
	call()
	call()
	if admitted > 2 {
		t.Errorf("admitted %d calls in the 2s after the burst, want at most 2 at 1/s", admitted)
	}
}
