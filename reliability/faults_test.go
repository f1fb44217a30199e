package reliability

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/idemhq/idem/client"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/reliability/faultproxy"
	"github.com/idemhq/idem/reliability/harness"
)

// fault is one network fault a proxy injects and then heals.
type fault struct {
	name        string
	start, heal func(p *faultproxy.Proxy)
}

var faults = []fault{
	{"latency", func(p *faultproxy.Proxy) { p.SetLatency(10 * time.Millisecond) }, func(p *faultproxy.Proxy) { p.SetLatency(0) }},
	{"blackhole", func(p *faultproxy.Proxy) { p.Blackhole(true) }, func(p *faultproxy.Proxy) { p.Blackhole(false) }},
	{"reset", func(p *faultproxy.Proxy) { p.Refuse(true); p.Reset() }, func(p *faultproxy.Proxy) { p.Refuse(false) }},
	{"reset-blackhole", func(p *faultproxy.Proxy) { p.Blackhole(true); p.Reset() }, func(p *faultproxy.Proxy) { p.Blackhole(false) }},
}

// TestNetworkFaults injects each fault between the clients and idemd (pebble
// store) and between idemd and PostgreSQL, under the mixed load: calls fail
// only with UNAVAILABLE or DEADLINE_EXCEEDED, never with a wrong answer (the
// history stays linearizable), and once the fault heals idemd serves again
// without being restarted.
func TestNetworkFaults(t *testing.T) {
	t.Parallel()
	t.Run("client-idemd", func(t *testing.T) {
		t.Parallel()
		d := startIdemd(t, pebbleStore(t))
		p, err := faultproxy.New(d.Addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		faultCycles(t, p.Addr(), p)
	})
	t.Run("idemd-postgres", func(t *testing.T) {
		t.Parallel()
		u, p := proxiedPostgres(t)
		d := startIdemd(t, u)
		faultCycles(t, d.Addr, p)
	})
}

func faultCycles(t *testing.T, addr string, p *faultproxy.Proxy) {
	ctx := testCtx(t)
	rec := harness.NewRecorder()
	// Short call deadlines, so a blackhole ends calls with DEADLINE_EXCEEDED
	// within the test's time.
	cs := clients(t, addr, 16, rec, 300*time.Millisecond)
	run := randomName("k")
	rounds, faultFor := 1, 500*time.Millisecond
	if *long {
		rounds, faultFor = 5, 3*time.Second
	}
	for r := range rounds {
		for _, f := range faults {
			// 32 live keys spread the calls a fault leaves without an outcome, so
			// that no key's history has more than a handful of them to search.
			w := harness.Workload{Clients: 16, Keys: 32, KeyEvery: 64, Think: 5 * time.Millisecond, Backoff: 250 * time.Millisecond,
				Prefix: fmt.Sprintf("%s-%s-%d", run, f.name, r), Seed: rand.Uint64()}
			wctx, stop := context.WithCancel(ctx)
			done := make(chan []string, 1)
			go func() { done <- w.Run(wctx, cs) }()
			// Not waiting for anything: load before, during and after the fault.
			time.Sleep(200 * time.Millisecond)
			faulted := p.Faulted()
			f.start(p)
			time.Sleep(faultFor)
			before, unknownBefore := rec.Counts()
			f.heal(p)
			healed := time.Now()
			if p.Faulted() == faulted {
				t.Errorf("%s: the fault touched no traffic: the proxy is not in the path, or the load stopped", f.name)
			}
			// idemd must serve again by itself, writes included, within a
			// few seconds of the fault ending.
			if err := probeWrite(ctx, cs[0], w.Prefix+"-probe"); err != nil {
				t.Errorf("%s: after the fault healed: %v", f.name, err)
			}
			recovered := time.Since(healed)
			time.Sleep(200 * time.Millisecond)
			stop()
			<-done
			t.Logf("%s: %d calls by the end of the fault (%d unknown); answered again %v after healing",
				f.name, before, unknownBefore, recovered.Round(time.Millisecond))
		}
	}
	for _, dup := range rec.DuplicateHolders() {
		t.Errorf("two holders: %s", dup)
	}
	checkHistory(t, rec)
}

// TestClientRetriesKeepOneHolder drives the Go client, with its own retries
// of UNAVAILABLE calls, through connection resets and latency: a Reserve
// whose answer was lost and that the client retried must not hand the key
// to a second caller while the first holds it. Nobody releases, so every
// key has at most one RESERVED answer in total.
func TestClientRetriesKeepOneHolder(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	d := startIdemd(t, pebbleStore(t))
	p, err := faultproxy.New(d.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	const workers, keys = 16, 32
	var (
		mu       sync.Mutex
		reserved = map[string][]uint64{}
		answered int
	)
	lctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range workers {
		c, err := client.New(p.Addr(), client.WithInsecure(), client.WithoutBreaker(), client.WithNamespace("retries"),
			client.WithRetry(10, 10*time.Millisecond, 100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lctx.Err() == nil {
				key := fmt.Sprintf("key-%d", rand.IntN(keys))
				cctx, cancel := context.WithTimeout(lctx, 2*time.Second)
				resp, err := c.Reserve(cctx, &idemv1.ReserveRequest{Key: key, Fingerprint: []byte("f"),
					LeaseTtl: durationpb.New(harness.Long), Retention: durationpb.New(harness.Long)})
				cancel()
				switch {
				case err == nil:
				case errors.Is(err, client.ErrUnavailable), errors.Is(err, context.DeadlineExceeded),
					errors.Is(err, context.Canceled), status.Code(err) == codes.DeadlineExceeded:
					continue
				default:
					t.Errorf("Reserve(%s) error = %v, want nil, UNAVAILABLE or DEADLINE_EXCEEDED", key, err)
					continue
				}
				mu.Lock()
				answered++
				if resp.GetOutcome() == idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
					reserved[key] = append(reserved[key], resp.GetRecord().GetToken())
				}
				mu.Unlock()
			}
		}()
	}
	for range 10 {
		// Not waiting for anything: moments to cut connections at.
		time.Sleep(time.Duration(50+rand.IntN(150)) * time.Millisecond)
		p.SetLatency(time.Duration(rand.IntN(3)) * 5 * time.Millisecond)
		p.Reset()
	}
	p.SetLatency(0)
	time.Sleep(200 * time.Millisecond)
	stop()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if p.Faulted() == 0 {
		t.Fatal("no reset touched a connection: the proxy is not in the path; the test checked nothing")
	}
	if answered == 0 {
		t.Fatal("no Reserve was answered; the test checked nothing")
	}
	for key, toks := range reserved {
		if len(toks) > 1 {
			t.Errorf("key %s: RESERVED %d times (tokens %v) with its holder alive, want once", key, len(toks), toks)
		}
	}
	t.Logf("%d answers, %d keys reserved", answered, len(reserved))
}
