package cockroach

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/storagetest"
)

// hostClock is storagetest.Stress's clock for replicas whose now is the
// database's now() on this host: the host's clock, floored to the
// microsecond the database keeps, plus the offset every replica adds.
type hostClock struct {
	rs     *storagetest.Replicas
	stores []*Store
	off    atomic.Int64 // µs
}

// Advance moves every replica's offset while no call runs, so none sees
// the replicas disagree on the time.
func (c *hostClock) Advance(d time.Duration) {
	defer c.rs.Pause()()
	c.off.Add(d.Microseconds())
	for _, s := range c.stores {
		s.offset.Add(d.Microseconds())
	}
}

func (c *hostClock) Now() time.Time {
	return time.Now().Truncate(time.Microsecond).Add(time.Duration(c.off.Load()) * time.Microsecond)
}

// sameClock skips unless the database's clock reads between two readings
// of this host's: Stress checks every answer's times against the calls'.
func sameClock(t *testing.T, s *Store) {
	t.Helper()
	for range 3 {
		t0 := time.Now().Truncate(time.Microsecond)
		var db time.Time
		if err := s.pool.QueryRow(testCtx(t), "SELECT clock_timestamp()").Scan(&db); err != nil {
			t.Fatalf("SELECT clock_timestamp(): %v", err)
		}
		if t1 := time.Now(); !db.Before(t0) && !db.After(t1) {
			return
		}
	}
	t.Skip("the database's clock is not this host's; Stress needs one clock")
}

// TestStress runs storagetest.Stress on two replicas sharing one database,
// one coalescing its calls and one not, with the sweeper racing the
// writers, at every isolation level.
func TestStress(t *testing.T) {
	base := postgresURL(t)
	d := storagetest.StressDuration(t, 3*time.Second)
	for _, level := range []string{"read committed", "repeatable read", "serializable"} {
		t.Run(level, func(t *testing.T) {
			u := withParams(t, migratedURL(t, base), "default_transaction_isolation", level, "pool_max_conns", "8")
			stores := []*Store{openTest(t, u), openTest(t, withParams(t, u, ParamCoalesce, "0"))}
			rs := &storagetest.Replicas{Stores: []storage.Store{stores[0], stores[1]}}
			defer rs.Close()
			sameClock(t, stores[0])
			ctx := testCtx(t)
			n := storagetest.Stress(t, storagetest.StressConfig{
				Store:    rs,
				Clock:    &hostClock{rs: rs, stores: stores},
				Duration: d,
				Sweep: func() error {
					_, err := stores[0].sweepOnce(ctx)
					if errors.Is(err, storage.ErrUnavailable) {
						return nil // lost a serialization conflict; the next sweep tries again
					}
					return err
				},
			})
			t.Logf("%d calls in %v; statements re-run for stale snapshots: %d and %d", n, d, stores[0].Reruns(), stores[1].Reruns())
		})
	}
}
