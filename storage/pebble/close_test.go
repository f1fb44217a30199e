package pebble

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/idemhq/idem/storage"
)

// TestCloseRacesCalls closes the store while coalesced Reserves and
// Completes, Lists, the background sweep and presence filter rebuilds
// run: every call answers or fails with ErrClosed, and after reopening
// every answered write is there as answered.
func TestCloseRacesCalls(t *testing.T) {
	for _, co := range []int{0, 1, 3} {
		t.Run(fmt.Sprintf("coalesce=%d", co), func(t *testing.T) {
			ctx := testCtx(t)
			dir := t.TempDir()
			clock := clockwork.NewFakeClockAt(epoch)
			s, err := Open(dir, WithClock(clock), WithCoalesce(co), WithSweepInterval(time.Millisecond), withFilterMinKeys(8))
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			acked := map[string]storage.State{}
			enough := make(chan struct{})
			var once sync.Once
			var wg sync.WaitGroup
			for g := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ; i++ {
						id := storage.ID{Tenant: "t", Namespace: "ns", Key: fmt.Sprintf("g%d-%d", g, i)}
						out, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id, Fingerprint: []byte("fp"), LeaseTTL: time.Hour, Retention: time.Hour})
						if err != nil || out != storage.OutcomeReserved {
							if !errors.Is(err, storage.ErrClosed) {
								t.Errorf("Reserve(%s) = %v, %v; want RESERVED or ErrClosed", id.Key, out, err)
							}
							return
						}
						state := storage.StateInProgress
						if i%2 == 0 {
							if _, err := s.Complete(ctx, storage.CompleteParams{ID: id, Token: 1, Retention: time.Hour}); err != nil {
								if !errors.Is(err, storage.ErrClosed) {
									t.Errorf("Complete(%s) error = %v, want nil or ErrClosed", id.Key, err)
								}
							} else {
								state = storage.StateCompleted
							}
						}
						if _, _, err := s.List(ctx, storage.ListParams{Tenant: "t", Namespace: "ns", Limit: 5}); err != nil && !errors.Is(err, storage.ErrClosed) {
							t.Errorf("List() error = %v, want nil or ErrClosed", err)
						}
						mu.Lock()
						acked[id.Key] = state
						if len(acked) >= 400 {
							once.Do(func() { close(enough) })
						}
						mu.Unlock()
						clock.Advance(time.Millisecond) // ticks the sweep
					}
				}()
			}
			<-enough
			if err := s.Close(); err != nil {
				t.Fatalf("Close() error = %v", err)
			}
			wg.Wait()
			s, err = Open(dir, WithClock(clock), WithSweepInterval(0))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for k, want := range acked {
				rec, err := s.Lookup(ctx, storage.ID{Tenant: "t", Namespace: "ns", Key: k})
				if err != nil || rec.State != want {
					t.Errorf("Lookup(%s) after reopen = %+v, %v; want %v", k, rec, err, want)
				}
			}
		})
	}
}
