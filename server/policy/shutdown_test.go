package policy

import (
	"context"
	"errors"
	"log/slog"
	"net/url"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/server/idemd"
	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/memory"
	"github.com/idemhq/idem/storage/pebble"
)

// stuckOpen makes the opens of policystuck:// stores ignore their context,
// as a store whose open blocks in a system call does: each open reports
// that it started, waits for release, then returns a store reporting its
// Close on closed.
var stuckOpen struct {
	sync.Mutex
	started, release chan struct{}
	store            *closeSignal
}

// closeSignal is a memory store that reports its first Close.
type closeSignal struct {
	storage.Store
	once   sync.Once
	closed chan struct{}
}

func (c *closeSignal) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Store.Close()
}

func init() {
	storage.Register("policystuck", func(context.Context, *url.URL, storage.OpenOptions) (storage.Store, error) {
		stuckOpen.Lock()
		started, release, st := stuckOpen.started, stuckOpen.release, stuckOpen.store
		stuckOpen.Unlock()
		close(started)
		<-release
		return st, nil
	})
}

// armStuckOpen prepares the next policystuck:// open and returns its store.
func armStuckOpen() (started, release chan struct{}, st *closeSignal) {
	stuckOpen.Lock()
	defer stuckOpen.Unlock()
	stuckOpen.started, stuckOpen.release = make(chan struct{}), make(chan struct{})
	stuckOpen.store = &closeSignal{Store: memory.New(), closed: make(chan struct{})}
	return stuckOpen.started, stuckOpen.release, stuckOpen.store
}

// pebbleClosed reports whether the pebble store at dir was closed: only
// then can it be opened again (the directory is locked while it is open).
func pebbleClosed(t *testing.T, dir string) bool {
	t.Helper()
	st, err := pebble.Open(dir)
	if err != nil {
		return false
	}
	st.Close()
	return true
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// A call still running when Close's context ends (a handler ignoring its
// canceled context, past idemd's grace) must not keep the policy's stores
// open: idemd exits right after, and a pebble store must be closed cleanly.
func TestCloseClosesStoresUnderAStuckCall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	path, data := pebblePolicy(t)
	r, err := Load(ctx, Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	g := r.pin() // a call that never ends
	if err := r.Close(canceled()); err == nil {
		t.Error("Close() with a call in flight and its context ended = nil, want an error saying so")
	}
	if !pebbleClosed(t, data) {
		t.Error("after Close() ended: the policy's pebble store is still open")
	}
	st, _ := r.Resolve("t", "a.x")
	if _, err := lookup(ctx, st, "a.x", "k"); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("the stuck call's store after Close(): Lookup() = %v, want ErrClosed (UNAVAILABLE)", err)
	}
	r.unpin(g) // the retirement that was waiting for it must not close it twice
	drained(t, r)
}

// Close while a reload is opening a store whose open ignores its context:
// the stores the resolver holds are closed at once, and the one being
// opened as soon as its open returns, though Close has returned by then.
func TestCloseDuringAStuckReload(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	path, data := pebblePolicy(t)
	r, err := Load(ctx, Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	started, release, opening := armStuckOpen()
	writePolicy(t, path, "namespaces:\n  a.*:\n    store: "+pebbleURL(data)+"\n  b.*:\n    store: policystuck://db\n")
	reloaded := make(chan error, 1)
	go func() { reloaded <- r.Reload(ctx) }()
	<-started
	if err := r.Close(canceled()); err == nil {
		t.Error("Close() during a reload that cannot finish = nil, want an error saying so")
	}
	if !pebbleClosed(t, data) {
		t.Error("after Close() returned: the policy's pebble store is still open")
	}
	close(release)
	if err := <-reloaded; err == nil {
		t.Error("Reload() that Close() overtook = nil, want an error")
	}
	select {
	case <-opening.closed:
	case <-ctx.Done():
		t.Fatal("the store the reload was opening was never closed")
	}
	if st, _ := r.Resolve("t", "b.x"); st == storage.Store(opening) {
		t.Error("Resolve(b.x) after Close() = the store the overtaken reload opened")
	}
}

// idemd's shutdown deadline passes while a reload is stuck opening a
// store: the policy's pebble store is still closed before Serve returns.
func TestIdemdShutdownClosesPolicyStoresDuringAStuckReload(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	path, data := pebblePolicy(t)
	cfg := idemd.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Store = "memory://"
	cfg.ShutdownTimeout = 0 // the deadline is idemd's minimum grace
	h := &servingHandler{addr: make(chan string, 1), reloaded: make(chan struct{}, 1)}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() {
		done <- idemd.Serve(sctx, cfg, slog.New(h), &extension{path: path, pingTimeout: defaultTestTimeout})
	}()
	select {
	case <-h.addr:
	case err := <-done:
		t.Fatalf("Serve() = %v before serving", err)
	}
	started, release, opening := armStuckOpen()
	writePolicy(t, path, "namespaces:\n  a.*:\n    store: "+pebbleURL(data)+"\n  b.*:\n    store: policystuck://db\n")
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	<-started
	stop()
	<-done // a shutdown error is only logged
	closed := pebbleClosed(t, data)
	close(release)
	if !closed {
		t.Error("after idemd's shutdown: the policy's pebble store is still open")
	}
	select {
	case <-opening.closed:
	case <-ctx.Done():
		t.Fatal("the store the reload was opening was never closed")
	}
}

// A health Watch stream lasts as long as its client's connection (gRPC
// clients with health checking keep one open per connection); it uses no
// policy store, so it must not keep a store a reload replaced open.
func TestHealthWatchDoesNotHoldReplacedStores(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	path := filepath.Join(t.TempDir(), "p.yaml")
	writePolicy(t, path, "namespaces:\n  old.*:\n    store: memory://?shards=1\n")
	f := serve(t, path, server.DefaultLimits())
	wctx, stopWatch := context.WithCancel(context.Background()) // not ended by ctx, so only the fix lets drained return
	defer stopWatch()
	w, err := healthpb.NewHealthClient(f.conn).Watch(wctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil { // the stream is in its handler
		t.Fatal(err)
	}
	writePolicy(t, path, "namespaces:\n  old.*:\n    store: memory://?shards=2\n")
	if err := f.r.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	drained(t, f.r)
	for _, u := range openURLs(f.r) {
		if u == "memory://?shards=1" {
			t.Error("the replaced store is still open while a health Watch runs")
		}
	}
}

// pebblePolicy writes a policy file routing a.* to a pebble store, and
// returns the file's path and the store's directory.
func pebblePolicy(t *testing.T) (path, data string) {
	t.Helper()
	dir := t.TempDir()
	data = filepath.Join(dir, "data")
	path = filepath.Join(dir, "p.yaml")
	writePolicy(t, path, "namespaces:\n  a.*:\n    store: "+pebbleURL(data)+"\n")
	return path, data
}
