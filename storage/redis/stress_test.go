package redis

import (
	"context"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/idemhq/idem/internal/testenv"
	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/storagetest"
)

// hostClock is storagetest.Stress's clock for stores whose now is Redis
// TIME on this host: the host's clock, floored to the microsecond TIME
// gives, plus the offset the stores add.
type hostClock struct {
	offsetClock
	rs *storagetest.Replicas
}

// Advance moves the offset while no call runs: a call reads the offset
// when it is made, and coalesced calls share the first one's, so a call
// made under one offset could otherwise run with one made under another.
func (c *hostClock) Advance(d time.Duration) {
	defer c.rs.Pause()()
	c.offsetClock.Advance(d)
}

func (c *hostClock) Now() time.Time {
	return time.Now().Truncate(time.Microsecond).Add(time.Duration(c.us.Load()) * time.Microsecond)
}

// sameClock skips unless Redis TIME reads between two readings of this
// host's clock: Stress checks every answer's times against the calls'.
func sameClock(ctx context.Context, t *testing.T, s *Store) {
	t.Helper()
	for range 3 {
		t0 := time.Now().Truncate(time.Microsecond)
		rt, err := s.c.Time(ctx).Result()
		if err != nil {
			t.Fatalf("TIME: %v", err)
		}
		if t1 := time.Now(); !rt.Before(t0) && !rt.After(t1) {
			return
		}
	}
	t.Skip("Redis's clock is not this host's; Stress needs one clock")
}

// TestStress runs storagetest.Stress on two stores sharing one Redis and
// one key prefix, as idemd replicas do, one coalescing its calls and one
// not.
func TestStress(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	a := openTest(ctx, t, "")
	o, err := goredis.ParseURL(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	o.MaxRetries = -1
	b, err := New(ctx, goredis.NewClient(o), Options{KeyPrefix: a.opts.KeyPrefix, WaitReplicas: -1})
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	rs := &storagetest.Replicas{Stores: []storage.Store{a, b}}
	defer rs.Close()
	sameClock(ctx, t, a)
	clock := &hostClock{rs: rs}
	a.offset, b.offset = clock.us.Load, clock.us.Load
	d := storagetest.StressDuration(t, 3*time.Second)
	n := storagetest.Stress(t, storagetest.StressConfig{Store: rs, Clock: clock, Duration: d})
	t.Logf("%d calls in %v", n, d)
}
