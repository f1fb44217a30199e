package cockroach

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

// gate is a run function that records each batch and blocks until released.
type gate struct {
	mu      sync.Mutex
	batches [][]string
	started chan struct{}
	release chan struct{}
}

func newGate() *gate {
	return &gate{started: make(chan struct{}, 100), release: make(chan struct{})}
}

func (g *gate) run(_ context.Context, items []string) []string {
	g.mu.Lock()
	g.batches = append(g.batches, append([]string(nil), items...))
	g.mu.Unlock()
	g.started <- struct{}{}
	<-g.release
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = "done:" + it
	}
	return out
}

func newTestCoalescer(g *gate, slots int) *coalescer[string, string] {
	return &coalescer[string, string]{
		slots: slots, max: 3, run: g.run,
		// items "k#n" name record k; the suffix tells calls apart.
		id: func(s string) storage.ID { return storage.ID{Key: strings.Split(s, "#")[0]} },
	}
}

func queued(c *coalescer[string, string]) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}

func waitQueued(t *testing.T, c *coalescer[string, string], n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for queued(c) != n {
		if time.Now().After(deadline) {
			t.Fatalf("queue holds %d calls, want %d", queued(c), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestCoalescerBatchesWhileBusy(t *testing.T) {
	g := newGate()
	c := newTestCoalescer(g, 1)
	ctx := context.Background()
	results := make(chan string, 10)
	call := func(item string) {
		r, err := c.do(ctx, item)
		if err != nil {
			t.Errorf("do(%q) error = %v", item, err)
		}
		results <- r
	}
	go call("a")
	<-g.started // "a" runs alone: the slot was free
	// While it runs, five calls queue: a, b, a again (same record as the
	// queued "a#2"), c, d.
	for _, it := range []string{"a#2", "b", "a#3", "c", "d"} {
		go call(it)
		waitQueued(t, c, queued(c)+1)
	}
	g.release <- struct{}{}
	<-g.started
	g.release <- struct{}{}
	<-g.started
	g.release <- struct{}{}
	got := map[string]bool{}
	for range 6 {
		got[<-results] = true
	}
	for _, it := range []string{"a", "a#2", "b", "a#3", "c", "d"} {
		if !got["done:"+it] {
			t.Errorf("no result for %q; got %v", it, got)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	// max 3 per batch, never one record twice in a batch, arrival order.
	want := [][]string{{"a"}, {"a#2", "b", "c"}, {"a#3", "d"}}
	if fmt.Sprint(g.batches) != fmt.Sprint(want) {
		t.Errorf("batches = %v, want %v", g.batches, want)
	}
}

func TestCoalescerRunsAtOnceWithFreeSlots(t *testing.T) {
	g := newGate()
	c := newTestCoalescer(g, 2)
	done := make(chan struct{}, 2)
	for _, it := range []string{"a", "b"} {
		go func() {
			if _, err := c.do(context.Background(), it); err != nil {
				t.Errorf("do(%q) error = %v", it, err)
			}
			done <- struct{}{}
		}()
	}
	// Both start without waiting for each other: two slots.
	<-g.started
	<-g.started
	close(g.release)
	<-done
	<-done
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.busy != 0 || len(c.queue) != 0 {
		t.Errorf("after the calls: busy = %d, queue = %d; want 0, 0", c.busy, len(c.queue))
	}
}

func TestCoalescerCallerGivesUp(t *testing.T) {
	g := newGate()
	c := newTestCoalescer(g, 1)
	go func() { _, _ = c.do(context.Background(), "a") }()
	<-g.started
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.do(ctx, "b")
		errc <- err
	}()
	waitQueued(t, c, 1)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("do() of a cancelled caller error = %v, want context.Canceled", err)
	}
	if n := queued(c); n != 0 {
		t.Errorf("a caller that gave up is still queued (%d)", n)
	}
	close(g.release)
	// The slot comes back: a later call runs.
	if r, err := c.do(context.Background(), "c"); err != nil || r != "done:c" {
		t.Fatalf("do(c) = %q, %v; want done:c", r, err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, b := range g.batches {
		for _, it := range b {
			if it == "b" {
				t.Errorf("the cancelled call ran: batches %v", g.batches)
			}
		}
	}
}

// TestCoalescedStatements runs concurrent Reserves and Completes on
// PostgreSQL: they share statements (fewer sends than calls), every answer
// is the one a call alone would get, and a call whose data the database
// refuses (a NUL byte in a TEXT key) fails alone.
func TestCoalescedStatements(t *testing.T) {
	ctx := testCtx(t)
	u := migratedURL(t, postgresURL(t))
	pu, _ := url.Parse(withParams(t, u, ParamSweepInterval, "0", ParamCoalesce, "1"))
	cfg, err := parseConfig(pu)
	if err != nil {
		t.Fatal(err)
	}
	counter := &tripCounter{}
	cfg.pool.ConnConfig.Tracer = counter
	dialer := &net.Dialer{}
	cfg.pool.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{c, counter}, nil
	}
	s, err := openConfig(ctx, cfg, nil)
	if err != nil {
		t.Fatalf("openConfig() error = %v", err)
	}
	defer s.Close()

	const n = 200
	id := func(i int) storage.ID { return storage.ID{Tenant: "co", Namespace: "ns", Key: fmt.Sprintf("k%03d", i)} }
	bad := storage.ID{Tenant: "co", Namespace: "ns", Key: "bad\x00key"}
	counter.reset()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			out, rec, err := s.Reserve(ctx, storage.ReserveParams{ID: id(i), Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour})
			if err == nil && (out != storage.OutcomeReserved || rec.ID != id(i) || rec.Token != 1) {
				err = fmt.Errorf("Reserve = %v, %+v", out, rec)
			}
			if err == nil {
				rec, err = s.Complete(ctx, storage.CompleteParams{ID: id(i), Token: 1, Result: &storage.Result{Body: []byte(id(i).Key)}, Retention: time.Hour})
				if err == nil && (rec.State != storage.StateCompleted || string(rec.Result.Body) != id(i).Key) {
					err = fmt.Errorf("Complete = %+v", rec)
				}
			}
			errs[i] = err
		})
	}
	var badErr error
	wg.Go(func() {
		_, _, badErr = s.Reserve(ctx, storage.ReserveParams{ID: bad, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour})
	})
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("key %d: %v", i, err)
		}
	}
	if badErr == nil {
		t.Error("Reserve of a key with a NUL byte succeeded, want the database's refusal")
	}
	if _, queries := counter.get(); queries >= 2*n {
		t.Errorf("%d calls sent %d statements; want fewer (coalesced)", 2*n+1, queries)
	} else {
		t.Logf("%d calls sent %d statements", 2*n+1, queries)
	}
	// A batch the database refuses for one item's sake runs item by item.
	mixed := []storage.ReserveParams{
		{ID: id(n), Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour},
		{ID: bad, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour},
		{ID: id(n + 1), Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour},
	}
	res := s.runReserves(ctx, mixed)
	if res[0].Err != nil || res[0].Outcome != storage.OutcomeReserved || res[2].Err != nil || res[2].Outcome != storage.OutcomeReserved {
		t.Errorf("good items of a refused batch = %+v, %+v; want RESERVED", res[0], res[2])
	}
	if res[1].Err == nil {
		t.Errorf("the refused item = %+v, want an error", res[1])
	}
	// A replay of each key answers COMPLETED with its own result.
	for i := range n {
		out, rec, err := s.Reserve(ctx, storage.ReserveParams{ID: id(i), Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour})
		if err != nil || out != storage.OutcomeCompleted || string(rec.Result.Body) != id(i).Key {
			t.Fatalf("replay of key %d = %v, %+v, %v", i, out, rec, err)
		}
	}
}
