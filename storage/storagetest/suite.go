package storagetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

// NowClock is a Clock that also knows the store's exact now. Harnesses whose
// store reads the same fake clock return one (clockwork's FakeClock is one);
// the suite then also checks absolute timestamps and the exact expiry
// boundary. Stores whose now is a database server's clock plus an offset
// must not claim it.
type NowClock interface {
	Clock
	Now() time.Time
}

const (
	// testTimeout bounds every subtest, so a deadlocked backend fails
	// instead of hanging the run.
	testTimeout = 60 * time.Second
	// timeTolerance absorbs backends that keep microseconds, not nanoseconds.
	timeTolerance = time.Millisecond
	// driftTolerance bounds how far a store whose clock is a server clock
	// plus an offset may move on its own while one subtest runs.
	driftTolerance = 5 * time.Second

	ttl       = 30 * time.Second
	retention = time.Hour
)

var (
	// runID keeps tenants of different runs apart in databases that
	// outlive one test binary.
	runID       = newRunID()
	tenantCount atomic.Uint64
)

func newRunID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// env is one subtest's store, clock and names.
type env struct {
	t      *testing.T
	ctx    context.Context
	s      storage.Store
	clock  Clock
	tenant string
	ns     string
	// closed is set when the subtest closed the store itself.
	closed bool
}

func newEnv(t *testing.T, h Harness) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	s, c := h.MakeStore(ctx, t)
	if s == nil || c == nil {
		t.Fatal("storagetest: harness returned a nil store or clock")
	}
	e := &env{
		t:      t,
		ctx:    ctx,
		s:      s,
		clock:  c,
		tenant: fmt.Sprintf("st-%s-%d", runID, tenantCount.Add(1)),
		ns:     "/test.v1.Test/Method",
	}
	t.Cleanup(func() {
		if !e.closed {
			if err := s.Close(); err != nil {
				t.Errorf("Close() = %v, want nil", err)
			}
		}
	})
	return e
}

// with returns the env for a subtest, so failures stop the right goroutine.
func (e *env) with(t *testing.T) *env {
	c := *e
	c.t = t
	return &c
}

// sub returns the env for a case of a table that shares one store: its own
// subtest and its own namespace.
func (e *env) sub(t *testing.T, name string) *env {
	c := e.with(t)
	c.ns = e.ns + "/" + name
	return c
}

func (e *env) id(key string) storage.ID {
	return storage.ID{Tenant: e.tenant, Namespace: e.ns, Key: key}
}

// now is the store's now when the clock knows it, else the zero time.
func (e *env) now() (time.Time, bool) {
	if nc, ok := e.clock.(NowClock); ok {
		return nc.Now(), true
	}
	return time.Time{}, false
}

func (e *env) advance(d time.Duration) { e.clock.Advance(d) }

func rp(id storage.ID, fp string, lease, ret time.Duration) storage.ReserveParams {
	return storage.ReserveParams{ID: id, Fingerprint: []byte(fp), LeaseTTL: lease, Retention: ret}
}

func (e *env) reserve(p storage.ReserveParams) (storage.Outcome, *storage.Record) {
	e.t.Helper()
	out, rec, err := e.s.Reserve(e.ctx, p)
	if err != nil {
		e.t.Fatalf("Reserve(%q) error = %v, want nil", p.Key, err)
	}
	if rec == nil {
		e.t.Fatalf("Reserve(%q) record = nil, want a record (outcome %v)", p.Key, out)
	}
	return out, rec
}

// mustReserve reserves a new key and checks the outcome.
func (e *env) mustReserve(p storage.ReserveParams, want storage.Outcome) *storage.Record {
	e.t.Helper()
	out, rec := e.reserve(p)
	if out != want {
		e.t.Fatalf("Reserve(%q) outcome = %v, want %v", p.Key, out, want)
	}
	return rec
}

func (e *env) complete(id storage.ID, token uint64, res *storage.Result, ret time.Duration) *storage.Record {
	e.t.Helper()
	rec, err := e.s.Complete(e.ctx, storage.CompleteParams{ID: id, Token: token, Result: res, Retention: ret})
	if err != nil {
		e.t.Fatalf("Complete(%q, token %d) error = %v, want nil", id.Key, token, err)
	}
	if rec == nil {
		e.t.Fatalf("Complete(%q, token %d) record = nil, want a record", id.Key, token)
	}
	return rec
}

func (e *env) release(id storage.ID, token uint64) *storage.Record {
	e.t.Helper()
	rec, err := e.s.Release(e.ctx, id, token)
	if err != nil {
		e.t.Fatalf("Release(%q, token %d) error = %v, want nil", id.Key, token, err)
	}
	if rec == nil {
		e.t.Fatalf("Release(%q, token %d) record = nil, want a record", id.Key, token)
	}
	return rec
}

func (e *env) lookup(id storage.ID) *storage.Record {
	e.t.Helper()
	rec, err := e.s.Lookup(e.ctx, id)
	if err != nil {
		e.t.Fatalf("Lookup(%q) error = %v, want nil", id.Key, err)
	}
	if rec == nil {
		e.t.Fatalf("Lookup(%q) record = nil, want a record", id.Key)
	}
	return rec
}

func (e *env) wantAbsent(id storage.ID) {
	e.t.Helper()
	rec, err := e.s.Lookup(e.ctx, id)
	if !errors.Is(err, storage.ErrNotFound) {
		e.t.Fatalf("Lookup(%q) = %+v, %v; want error ErrNotFound", id.Key, rec, err)
	}
}

// wantUnchanged checks that the stored record still equals before.
func (e *env) wantUnchanged(before *storage.Record) {
	e.t.Helper()
	got := e.lookup(before.ID)
	if d := diffRecord(got, before); d != "" {
		e.t.Fatalf("Lookup(%q) record changed:\n%s", before.Key, d)
	}
}

func wantErr(t *testing.T, op string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s error = %v, want errors.Is(err, %v)", op, err, want)
	}
}

// sameTime compares two store times, tolerating microsecond storage.
func sameTime(a, b time.Time) bool {
	if a.IsZero() || b.IsZero() {
		return a.IsZero() == b.IsZero()
	}
	d := a.Sub(b)
	return d < timeTolerance && d > -timeTolerance
}

// diffRecord lists the fields in which got differs from want; "" if none.
func diffRecord(got, want *storage.Record) string {
	if got == nil || want == nil {
		if got == want {
			return ""
		}
		return fmt.Sprintf("  record = %+v, want %+v\n", got, want)
	}
	var d string
	add := func(field string, g, w any) {
		d += fmt.Sprintf("  %s = %v, want %v\n", field, g, w)
	}
	if got.ID != want.ID {
		add("ID", got.ID, want.ID)
	}
	if string(got.Fingerprint) != string(want.Fingerprint) {
		add("Fingerprint", fmt.Sprintf("%q", got.Fingerprint), fmt.Sprintf("%q", want.Fingerprint))
	}
	if got.State != want.State {
		add("State", got.State, want.State)
	}
	if got.Token != want.Token {
		add("Token", got.Token, want.Token)
	}
	if got.Attempts != want.Attempts {
		add("Attempts", got.Attempts, want.Attempts)
	}
	if !got.Result.Equal(want.Result) {
		add("Result", fmt.Sprintf("%+v", got.Result), fmt.Sprintf("%+v", want.Result))
	}
	if !sameCheckpoint(got.Checkpoint, want.Checkpoint) {
		add("Checkpoint", fmt.Sprintf("%+v", got.Checkpoint), fmt.Sprintf("%+v", want.Checkpoint))
	}
	for _, f := range []struct {
		name string
		g, w time.Time
	}{
		{"CreatedAt", got.CreatedAt, want.CreatedAt},
		{"LeaseExpiresAt", got.LeaseExpiresAt, want.LeaseExpiresAt},
		{"CompletedAt", got.CompletedAt, want.CompletedAt},
		{"ExpiresAt", got.ExpiresAt, want.ExpiresAt},
	} {
		if !sameTime(f.g, f.w) {
			add(f.name, f.g, f.w)
		}
	}
	return d
}

func sameCheckpoint(a, b *storage.Checkpoint) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Phase == b.Phase && string(a.Data) == string(b.Data)
}

// wantAt checks a timestamp against base+d: exactly (within tolerance) when
// the clock knows the store's now, else within the drift a server clock may
// add while the subtest runs.
func (e *env) wantAt(field string, got, base time.Time, d time.Duration) {
	e.t.Helper()
	want := base.Add(d)
	if _, exact := e.now(); exact {
		if !sameTime(got, want) {
			e.t.Fatalf("%s = %v, want %v", field, got, want)
		}
		return
	}
	if got.Before(want.Add(-timeTolerance)) || got.After(want.Add(driftTolerance)) {
		e.t.Fatalf("%s = %v, want %v (+ at most %v drift)", field, got, want, driftTolerance)
	}
}

// bigResult exercises every field of a stored result.
func bigResult(tag string) *storage.Result {
	return &storage.Result{
		Code:    5,
		Message: "not found: " + tag,
		Body:    []byte("body\x00\xff\x01" + tag),
		Details: []storage.Detail{
			{TypeURL: "type.googleapis.com/google.rpc.ErrorInfo", Value: []byte("\x0a\x03abc" + tag)},
			{TypeURL: "type.googleapis.com/google.rpc.RetryInfo", Value: []byte{0, 1, 2, 255}},
		},
		Metadata: map[string]string{"x-a": "1", "x-b": "two " + tag, "empty": ""},
	}
}

// parallel runs n goroutines and waits for them.
func parallel(n int, f func(i int)) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			f(i)
		}()
	}
	close(start)
	wg.Wait()
}

// runAll runs every group of the suite.
func runAll(t *testing.T, h Harness) {
	t.Run("Reserve", func(t *testing.T) { testReserve(t, h) })
	t.Run("Complete", func(t *testing.T) { testComplete(t, h) })
	t.Run("Release", func(t *testing.T) { testRelease(t, h) })
	t.Run("ExtendLease", func(t *testing.T) { testExtendLease(t, h) })
	t.Run("Checkpoint", func(t *testing.T) { testCheckpoint(t, h) })
	t.Run("Fencing", func(t *testing.T) { testFencing(t, h) })
	t.Run("FencingAfterTakeover", func(t *testing.T) { testFencingMatrix(t, h) })
	t.Run("Lookup", func(t *testing.T) { testLookup(t, h) })
	t.Run("Expiry", func(t *testing.T) { testExpiry(t, h) })
	t.Run("Batch", func(t *testing.T) { testBatch(t, h) })
	t.Run("Admin", func(t *testing.T) { testAdmin(t, h) })
	t.Run("Isolation", func(t *testing.T) { testIsolation(t, h) })
	t.Run("LimitRoundTrips", func(t *testing.T) { testLimitRoundTrips(t, h) })
	t.Run("Copies", func(t *testing.T) { testCopies(t, h) })
	t.Run("Damaged", func(t *testing.T) { testDamaged(t, h) })
	t.Run("Race", func(t *testing.T) { testRace(t, h) })
	t.Run("Close", func(t *testing.T) { testClose(t, h) })
}
