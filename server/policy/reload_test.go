package policy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/pebble"
)

// drained waits until every replaced generation has released its stores.
func drained(t *testing.T, r *Resolver) {
	t.Helper()
	r.mu.Lock()
	done := r.lastRetire
	r.mu.Unlock()
	select {
	case <-done:
	case <-time.After(defaultTestTimeout):
		t.Fatal("replaced stores were never released")
	}
}

func openURLs(r *Resolver) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var urls []string
	for u := range r.open {
		urls = append(urls, u)
	}
	return urls
}

// TestReloadUnderLoad rewrites and reloads the policy 20 times while
// callers hammer three namespaces. Two keep their Pebble stores; "moving.*"
// gets a new store on every reload, and its callers hold long waiting
// Reserves, so a store closed under a call would fail it.
func TestReloadUnderLoad(t *testing.T) {
	dir := t.TempDir()
	a, b := pebbleURL(filepath.Join(dir, "a")), pebbleURL(filepath.Join(dir, "b"))
	path := filepath.Join(dir, "p.yaml")
	policyN := func(i int) string {
		return fmt.Sprintf(`
namespaces:
  payments.*:
    store: %s
    max_retention: %dh
  notify.*:
    store: %s
  moving.*:
    store: memory://?shards=%d
  default:
    default_retention: %dm
`, a, 24+i, b, i+1, 10+i)
	}
	writePolicy(t, path, policyN(0))
	f := serve(t, path, server.DefaultLimits())

	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	var calls, failures atomic.Int64
	var firstErr atomic.Value
	fail := func(err error) {
		failures.Add(1)
		firstErr.CompareAndSwap(nil, err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	worker := func(w int, ns string, op func(key string) error) {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := op(fmt.Sprintf("w%d-%d", w, i)); err != nil {
				fail(fmt.Errorf("%s: %w", ns, err))
			}
			calls.Add(1)
		}
	}
	for w := range 2 {
		wg.Add(3)
		go worker(w, "payments.charge", func(key string) error {
			return reserveComplete(ctx, f.client, "payments.charge", key, []byte("ok"))
		})
		go worker(w, "notify.send", func(key string) error {
			return reserveComplete(ctx, f.client, "notify.send", key, []byte("ok"))
		})
		go worker(w, "moving.x", func(key string) error {
			req := &idemv1.ReserveRequest{Namespace: "moving.x", Key: key, Fingerprint: []byte("fp")}
			if _, err := f.client.Reserve(ctx, req); err != nil {
				return err
			}
			// The key is held, so this call waits, polling the store
			// it resolved, across reloads.
			req.Wait = dur(50 * time.Millisecond)
			_, err := f.client.Reserve(ctx, req)
			return err
		})
	}
	progress := func(n int64) {
		target := calls.Load() + n
		for calls.Load() < target && failures.Load() == 0 && ctx.Err() == nil {
			time.Sleep(time.Millisecond) // load pacing, not a timing assertion
		}
	}
	progress(20)
	const reloads = 20
	for i := 1; i <= reloads; i++ {
		writePolicy(t, path, policyN(i))
		if err := f.r.Reload(ctx); err != nil {
			t.Fatalf("Reload() %d = %v", i, err)
		}
		progress(10)
	}
	close(stop)
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d of %d calls failed during reloads; first: %v", n, calls.Load(), firstErr.Load())
	}
	t.Logf("%d calls, %d reloads, no failures", calls.Load(), reloads)

	// The last policy is in force.
	st, pol := f.r.Resolve("default", "moving.x")
	if _, err := f.client.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "moving.x", Key: "after"}); err != nil {
		t.Fatal(err)
	}
	if _, err := lookup(ctx, st, "moving.x", "after"); err != nil {
		t.Errorf("Lookup(moving.x/after) in the last policy's store = %v, want the record", err)
	}
	if _, pol = f.r.Resolve("default", "other"); pol.DefaultRetention != time.Duration(10+reloads)*time.Minute {
		t.Errorf("default retention = %v, want %v", pol.DefaultRetention, time.Duration(10+reloads)*time.Minute)
	}
	// Replaced memory stores were closed, the unchanged Pebble stores kept.
	drained(t, f.r)
	got := openURLs(f.r)
	want := map[string]bool{"memory://": true, a: true, b: true, fmt.Sprintf("memory://?shards=%d", reloads+1): true}
	if len(got) != len(want) {
		t.Errorf("open stores = %v, want %v", got, want)
	}
	for _, u := range got {
		if !want[u] {
			t.Errorf("store %s still open, want it closed", u)
		}
	}
}

// TestReplacedStoreOutlivesItsCalls holds a call open across a reload: the
// store it resolved stays usable until the call ends, then is closed.
func TestReplacedStoreOutlivesItsCalls(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "p.yaml")
	kept := pebbleURL(filepath.Join(dir, "kept"))
	writePolicy(t, path, "namespaces:\n  old.*:\n    store: memory://?shards=1\n  kept.*:\n    store: "+kept+"\n")
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	r, err := Load(ctx, Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)

	g := r.pin() // a call in flight
	old, _ := r.Resolve("t", "old.a")
	keptBefore, _ := r.Resolve("t", "kept.a")
	writePolicy(t, path, "namespaces:\n  old.*:\n    store: memory://?shards=2\n  kept.*:\n    store: "+kept+"\n")
	if err := r.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if now, _ := r.Resolve("t", "old.a"); now == old {
		t.Fatal("Resolve(old.a) after reload = the replaced store, want the new one")
	}
	if now, _ := r.Resolve("t", "kept.a"); now != keptBefore {
		t.Error("Resolve(kept.a) after reload = a new store, want the open one reused (same URL)")
	}
	if _, err := old.Lookup(ctx, storage.ID{Tenant: "t", Namespace: "old.a", Key: "k"}); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("replaced store during the call: Lookup() = %v, want ErrNotFound (still open)", err)
	}
	r.unpin(g)
	drained(t, r)
	if _, err := old.Lookup(ctx, storage.ID{Tenant: "t", Namespace: "old.a", Key: "k"}); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("replaced store after the call: Lookup() = %v, want ErrClosed", err)
	}
	if _, err := keptBefore.Lookup(ctx, storage.ID{Tenant: "t", Namespace: "kept.a", Key: "k"}); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("reused store after the reload: Lookup() = %v, want ErrNotFound (still open)", err)
	}
}

func TestFailedReloadKeepsOldPolicy(t *testing.T) {
	dir := t.TempDir()
	fresh := filepath.Join(dir, "fresh")
	tests := []struct {
		name string
		yaml string // "" removes the file
		want string
	}{
		{"unknown key", "namespaces:\n  a.*:\n    max_lease: 1m\n    colour: blue\n", ":4: \"a.*\": unknown key \"colour\""},
		{"bad duration", "namespaces:\n  a.*:\n    max_lease: soon\n", ":3: \"a.*\": max_lease is \"soon\""},
		{"unreachable store", "namespaces:\n  a.*:\n    store: " + pebbleURL(fresh) + "\n  b.*:\n    store: redis://127.0.0.1:1/0?dial_timeout=200ms\n", ":4: \"b.*\":"},
		{"file removed", "", "no such file"},
	}
	path := filepath.Join(dir, "p.yaml")
	writePolicy(t, path, "namespaces:\n  a.*:\n    max_lease: 2m\n")
	f := serve(t, path, server.DefaultLimits())
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.yaml == "" {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			} else {
				writePolicy(t, path, tt.yaml)
			}
			err := f.r.Reload(ctx)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Reload() = %v, want an error containing %q", err, tt.want)
			}
			if _, pol := f.r.Resolve("default", "a.x"); pol.MaxLease != 2*time.Minute {
				t.Errorf("after a failed reload: max lease of a.x = %v, want the old policy's 2m", pol.MaxLease)
			}
			_, err = f.client.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "a.x", Key: tt.name, LeaseTtl: dur(time.Minute)})
			if err != nil {
				t.Errorf("Reserve() after a failed reload = %v", err)
			}
			logs := strings.ReplaceAll(f.logs.String(), `\"`, `"`) // the text handler quotes err
			if !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, "keeping the old policy") || !strings.Contains(logs, tt.want) {
				t.Errorf("log = %q, want an error-level line saying why", logs)
			}
		})
	}
	// The failed reload opened the fresh Pebble store, then closed it.
	st, err := pebble.Open(fresh)
	if err != nil {
		t.Fatalf("pebble.Open(fresh) after the failed reload = %v, want it released", err)
	}
	st.Close()
}
