package coalesce

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

var errRefused = errors.New("refused")

// fakeBackend records how calls reach it; a key "bad" is refused, and a
// batch holding it fails as a whole.
type fakeBackend struct {
	mu              sync.Mutex
	singles, arrays int
	sizes           []int
	release         chan struct{} // when set, the first call waits on it
}

func (f *fakeBackend) wait() {
	if f.release != nil {
		<-f.release
	}
}

func (f *fakeBackend) backend(oneByOne bool) Backend {
	b := Backend{
		Reserve: func(_ context.Context, p storage.ReserveParams) (storage.Outcome, *storage.Record, error) {
			f.mu.Lock()
			f.singles++
			f.mu.Unlock()
			f.wait()
			if p.Key == "bad" {
				return 0, nil, errRefused
			}
			return storage.OutcomeReserved, &storage.Record{ID: p.ID, Token: 1}, nil
		},
		BatchReserve: func(_ context.Context, items []storage.ReserveParams) ([]storage.ReserveResult, error) {
			f.mu.Lock()
			f.arrays++
			f.sizes = append(f.sizes, len(items))
			f.mu.Unlock()
			res := make([]storage.ReserveResult, len(items))
			for i, p := range items {
				if p.Key == "bad" {
					return nil, errRefused
				}
				res[i] = storage.ReserveResult{Outcome: storage.OutcomeReserved, Record: &storage.Record{ID: p.ID, Token: 1}}
			}
			return res, nil
		},
	}
	if oneByOne {
		b.OneByOne = func(_ context.Context, err error) bool { return errors.Is(err, errRefused) }
	}
	return b
}

// reserveAll sends the first key alone (holding the slot until released)
// and the rest while it is in flight, so they form one batch.
func reserveAll(t *testing.T, o *Ops, f *fakeBackend, keys []string) map[string]error {
	t.Helper()
	ctx := context.Background()
	got := map[string]error{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	call := func(k string) {
		_, rec, err := o.Reserve(ctx, storage.ReserveParams{ID: storage.ID{Key: k}})
		if err == nil && rec.Key != k {
			err = errors.New("answered for " + rec.Key)
		}
		mu.Lock()
		got[k] = err
		mu.Unlock()
	}
	wg.Go(func() { call(keys[0]) })
	for deadline := time.Now().Add(10 * time.Second); ; {
		f.mu.Lock()
		started := f.singles
		f.mu.Unlock()
		if started == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first call never reached the backend")
		}
		time.Sleep(time.Millisecond)
	}
	for i, k := range keys[1:] {
		wg.Go(func() { call(k) })
		for deadline := time.Now().Add(10 * time.Second); ; {
			o.reserves.mu.Lock()
			n := len(o.reserves.queue)
			o.reserves.mu.Unlock()
			if n == i+1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("queue holds %d calls, want %d", n, i+1)
			}
			time.Sleep(time.Millisecond)
		}
	}
	close(f.release)
	wg.Wait()
	return got
}

func TestOpsRefusedItemFailsAlone(t *testing.T) {
	f := &fakeBackend{release: make(chan struct{})}
	o := NewOps(1, 100, f.backend(true))
	got := reserveAll(t, o, f, []string{"first", "a", "bad", "b"})
	for k, err := range got {
		if want := k == "bad"; (err != nil) != want {
			t.Errorf("Reserve(%s) error = %v; want an error: %v", k, err, want)
		}
	}
	if f.arrays != 1 || f.sizes[0] != 3 || f.singles != 4 {
		t.Errorf("backend saw %d batch calls %v and %d single calls; want one batch of 3, then its items one by one after the first alone", f.arrays, f.sizes, f.singles)
	}
}

func TestOpsBatchErrorGoesToEveryItem(t *testing.T) {
	f := &fakeBackend{release: make(chan struct{})}
	o := NewOps(1, 100, f.backend(false))
	got := reserveAll(t, o, f, []string{"first", "a", "bad", "b"})
	for _, k := range []string{"a", "bad", "b"} {
		if !errors.Is(got[k], errRefused) {
			t.Errorf("Reserve(%s) error = %v, want the batch's error", k, got[k])
		}
	}
	if got["first"] != nil || f.singles != 1 {
		t.Errorf("first = %v after %d single calls; want nil after 1", got["first"], f.singles)
	}
}
