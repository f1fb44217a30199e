package server

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/memory"
)

// gatedPing is a store whose Ping, once armed, waits for gate to close,
// ignoring its context.
type gatedPing struct {
	storage.Store
	armed chan struct{} // closed: Ping waits on gate
	gate  chan struct{}
}

func (g *gatedPing) Ping(ctx context.Context) error {
	select {
	case <-g.armed:
		<-g.gate
		return nil
	default:
		return g.Store.Ping(ctx)
	}
}

type storesResolver struct {
	StaticResolver
	list []storage.Store
}

func (r *storesResolver) Stores() []storage.Store { return r.list }

// TestHealthAnsweredPingNotHungAfterTimeout_s12hp: once the health timeout
// has run out on a hung store, the stores after it in the list whose Pings
// had already answered are judged by their answer, not reported as hung
// too. pingAll waited on each ping with a select on its done channel and
// the shared timeout; with both ready, select picks either at random, so a
// healthy store listed after a hung one was counted as hung half the time
// (the end-to-end run's failed_stores:2 with one store down).
func TestHealthAnsweredPingNotHungAfterTimeout_s12hp(t *testing.T) {
	armed := make(chan struct{})
	hung := &gatedPing{Store: memory.New(memory.WithSweepInterval(0)), armed: armed, gate: make(chan struct{})}
	defer close(hung.gate)
	healthyGate := make(chan struct{})
	const n = 64 // with the bug, all pass with probability 2^-64
	var healthy []storage.Store
	for range n {
		healthy = append(healthy, &gatedPing{Store: memory.New(memory.WithSweepInterval(0)), armed: armed, gate: healthyGate})
	}
	res := &storesResolver{StaticResolver: StaticResolver{Store: hung}, list: healthy}
	// The interval and timeout never run out in the test: the timeout is
	// ended by hand, by cancelling the Service's background context, once
	// every healthy Ping has answered.
	s, err := New(hung, WithPolicyResolver(res), WithHealthCheck(time.Hour, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	close(armed)

	stores := s.stores()
	if len(stores) != n+1 || stores[0] != storage.Store(hung) {
		t.Fatalf("stores() = %d stores, hung first: %v; want %d", len(stores), stores[0] == storage.Store(hung), n+1)
	}
	out := make(chan map[storage.Store]error, 1)
	go func() { out <- s.pingAll(stores) }()

	// Wait for every Ping to be running, and take the healthy ones.
	var pings []*storePing
	for {
		s.pingMu.Lock()
		if len(s.pings) == n+1 {
			for _, st := range healthy {
				pings = append(pings, s.pings[st])
			}
		}
		s.pingMu.Unlock()
		if pings != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(healthyGate)
	for _, p := range pings {
		<-p.done
		if p.err != nil {
			t.Fatalf("healthy ping: %v", p.err)
		}
	}
	// Every healthy store has answered; now the timeout runs out, with the
	// hung store, first in the list, still pinging.
	s.stop()
	failed := <-out
	if err, ok := failed[hung]; !ok || !errors.Is(err, errPingHung) {
		t.Errorf("hung store: failed = %v, %v; want errPingHung", err, ok)
	}
	bad := 0
	for _, st := range healthy {
		if _, ok := failed[st]; ok {
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d healthy stores whose Ping had answered reported failed: %d failed in all, want 1", bad, n, len(failed))
	}
}
