package coalesce

import (
	"context"
	"errors"
	"fmt"
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

func newTestCoalescer(g *gate, slots int) *Coalescer[string, string] {
	return &Coalescer[string, string]{
		Slots: slots, Max: 3, Run: g.run,
		// items "k#n" name record k; the suffix tells calls apart.
		ID: func(s string) storage.ID { return storage.ID{Key: strings.Split(s, "#")[0]} },
	}
}

func queued(c *Coalescer[string, string]) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}

func waitQueued(t *testing.T, c *Coalescer[string, string], n int) {
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
		r, err := c.Do(ctx, item)
		if err != nil {
			t.Errorf("Do(%q) error = %v", item, err)
		}
		results <- r
	}
	go call("a")
	<-g.started // "a" runs alone: the slot was free
	// While it runs, five calls queue: a, b, a again (same record as the
	// queued "a#2"), c, d.
	for i, it := range []string{"a#2", "b", "a#3", "c", "d"} {
		go call(it)
		waitQueued(t, c, i+1)
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
			if _, err := c.Do(context.Background(), it); err != nil {
				t.Errorf("Do(%q) error = %v", it, err)
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
	// A batch's goroutine frees its slot just after answering its
	// callers, so the slots are free soon after, not at once.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		busy, queue := c.busy, len(c.queue)
		c.mu.Unlock()
		if busy == 0 && queue == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the calls: busy = %d, queue = %d; want 0, 0", busy, queue)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestCoalescerCallerGivesUp(t *testing.T) {
	g := newGate()
	c := newTestCoalescer(g, 1)
	go func() { _, _ = c.Do(context.Background(), "a") }()
	<-g.started
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Do(ctx, "b")
		errc <- err
	}()
	waitQueued(t, c, 1)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Do() of a cancelled caller error = %v, want context.Canceled", err)
	}
	if n := queued(c); n != 0 {
		t.Errorf("a caller that gave up is still queued (%d)", n)
	}
	close(g.release)
	// The slot comes back: a later call runs.
	if r, err := c.Do(context.Background(), "c"); err != nil || r != "done:c" {
		t.Fatalf("Do(c) = %q, %v; want done:c", r, err)
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
