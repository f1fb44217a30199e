package reliability

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/reliability/faultproxy"
	"github.com/idemhq/idem/reliability/harness"
	"github.com/idemhq/idem/reliability/model"
)

// crash is one way to take the service down and bring it back.
type crash struct {
	down, up func(ctx context.Context) error
}

// TestCrash kills the service at random moments under the mixed load and
// brings it back, many times: kill -9 of idemd on pebble and on PostgreSQL,
// and PostgreSQL going away under a running idemd (every connection reset
// and new ones refused by a proxy, then let through again; the shared
// PostgreSQL server itself is not stopped, since other tests use it).
func TestCrash(t *testing.T) {
	t.Parallel()
	killIdemd := func(store func(testing.TB) string) func(t *testing.T) (*harness.Idemd, crash) {
		return func(t *testing.T) (*harness.Idemd, crash) {
			d := startIdemd(t, store(t))
			return d, crash{down: func(context.Context) error { return d.Kill() }, up: d.Start}
		}
	}
	tests := []struct {
		name  string
		setup func(t *testing.T) (*harness.Idemd, crash)
	}{
		{"pebble/kill-idemd", killIdemd(pebbleStore)},
		{"postgres/kill-idemd", killIdemd(postgresStore)},
		{"postgres/postgres-down", func(t *testing.T) (*harness.Idemd, crash) {
			u, p := proxiedPostgres(t)
			d := startIdemd(t, u)
			var before int64
			return d, crash{
				down: func(context.Context) error { before = p.Faulted(); p.Refuse(true); p.Reset(); return nil },
				up: func(context.Context) error {
					p.Refuse(false)
					if p.Faulted() == before {
						return errors.New("the outage reset and refused no connection: the proxy is not between idemd and PostgreSQL")
					}
					return nil
				},
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, c := tt.setup(t)
			crashCycles(t, d, c)
		})
	}
}

// proxiedPostgres is a migrated schema of the test PostgreSQL reached
// through a fault proxy, and the proxy.
func proxiedPostgres(t *testing.T) (string, *faultproxy.Proxy) {
	t.Helper()
	direct := postgresStore(t)
	u := mustParse(t, direct)
	p, err := faultproxy.New(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	u.Host = p.Addr()
	return u.String(), p
}

func crashCycles(t *testing.T, d *harness.Idemd, c crash) {
	ctx := testCtx(t)
	cycles, minLoad, maxLoad := 20, 200*time.Millisecond, 800*time.Millisecond
	if *long {
		cycles, maxLoad = 100, 3*time.Second
	}
	rec := harness.NewRecorder()
	cs := clients(t, d.Addr, 20, rec, 5*time.Second)
	run := randomName("k")
	everyKey := map[string]bool{}
	for i := range cycles {
		w := harness.Workload{Clients: 16, Readers: 4, Keys: 8, KeyEvery: 32, Think: 5 * time.Millisecond, Prefix: fmt.Sprintf("%s-c%d", run, i), Seed: rand.Uint64()}
		wctx, stop := context.WithCancel(ctx)
		done := make(chan []string, 1)
		go func() { done <- w.Run(wctx, cs) }()
		// Not a wait for anything: a random moment in the load to crash at.
		time.Sleep(minLoad + rand.N(maxLoad-minLoad))
		if err := c.down(ctx); err != nil {
			t.Fatalf("cycle %d: taking the service down: %v", i, err)
		}
		stop()
		keys := <-done
		restart := time.Now()
		if err := c.up(ctx); err != nil {
			t.Fatalf("cycle %d: bringing the service back: %v", i, err)
		}
		up := time.Now()
		// Everything acknowledged so far reads back identically, and the
		// rest of this cycle's keys are read once more for the history;
		// each client reads its share.
		acked := rec.Acknowledged()
		readBack(ctx, t, cs, fmt.Sprintf("cycle %d", i), acked, slices.Concat(slices.Collect(maps.Keys(acked)), keys))
		for _, k := range keys {
			everyKey[k] = true
		}
		if i == 0 {
			t.Logf("cycle 0: %d keys, back up in %v, read back in %v", len(keys), up.Sub(restart).Round(time.Millisecond), time.Since(up).Round(time.Millisecond))
		}
		// Reads alone would pass a store that came back refusing writes.
		if err := probeWrite(ctx, cs[0], fmt.Sprintf("%s-c%d-probe", run, i)); err != nil {
			t.Fatalf("cycle %d: after coming back: %v", i, err)
		}
	}
	// Every key of every cycle once more: a Reserve or Release a later
	// crash undid is caught only by a read after that crash.
	readBack(ctx, t, cs, "at the end", rec.Acknowledged(), slices.Collect(maps.Keys(everyKey)))
	for _, dup := range rec.DuplicateHolders() {
		t.Errorf("two holders: %s", dup)
	}
	if len(rec.Acknowledged()) == 0 {
		t.Error("no Complete was acknowledged in any cycle; the test checked nothing")
	}
	checkHistory(t, rec)
}

// readBack looks up keys, each client its share, into the history, and
// fails the test for an acknowledged Complete that does not read back
// identically.
func readBack(ctx context.Context, t *testing.T, cs []*harness.Client, when string, acked map[string]string, keys []string) {
	var wg sync.WaitGroup
	for ci, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := ci; j < len(keys); j += len(cs) {
				key := keys[j]
				got := lookupUntilKnown(ctx, c, key)
				want, ok := acked[key]
				switch {
				case ctx.Err() != nil:
					return
				case ok && (got.Unknown || got.Err != model.OK || got.State != model.Completed || got.Result != want):
					t.Errorf("%s: Lookup(%s) after the crash = %s, want COMPLETED result=%q", when, key, got.String(model.Lookup), want)
				}
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatalf("%s: the test's time ran out while reading back: %v", when, ctx.Err())
	}
}

// lookupUntilKnown looks key up until the answer is known, for as long as
// the service takes to come back (the client's calls time out on their own).
func lookupUntilKnown(ctx context.Context, c *harness.Client, key string) model.Output {
	for {
		out := c.Lookup(ctx, key)
		if !out.Unknown || ctx.Err() != nil {
			return out
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// probeWrite reserves key and completes it, each retried until its answer
// is known for up to 10 s: the service takes writes again. The calls are
// part of the history.
func probeWrite(ctx context.Context, c *harness.Client, key string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	until := func(call func() model.Output) model.Output {
		for {
			out := call()
			if !out.Unknown || ctx.Err() != nil {
				return out
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	res := &idemv1.Result{Message: "probe " + key}
	r := until(func() model.Output { return c.Reserve(ctx, key, "fp-"+key) })
	if r.Unknown || r.Outcome != model.Reserved && r.Outcome != model.OutcomeInProgress {
		// IN_PROGRESS: an earlier attempt of this loop reserved it.
		return fmt.Errorf("Reserve(%s) of a fresh key = %s, want RESERVED within 10s", key, r.String(model.Reserve))
	}
	got := until(func() model.Output { return c.Complete(ctx, key, r.Token, res) })
	if got.Unknown || got.Err != model.OK || got.State != model.Completed {
		return fmt.Errorf("Complete(%s, token %d) = %s, want COMPLETED within 10s", key, r.Token, got.String(model.Complete))
	}
	return nil
}
