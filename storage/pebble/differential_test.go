package pebble

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/memory"
	"github.com/idemhq/idem/storage/storagetest"
)

// reopening is a pebble store that closes and reopens its directory every
// few calls, so the calls after each reopen race the presence filter's
// first scan and read what the log replay brought back.
type reopening struct {
	storage.Store
	t     *testing.T
	dir   string
	opts  []Option
	calls int
}

func (r *reopening) tick() {
	if r.calls++; r.calls%97 != 0 {
		return
	}
	if err := r.Store.Close(); err != nil {
		r.t.Fatalf("Close() error = %v", err)
	}
	s, err := Open(r.dir, r.opts...)
	if err != nil {
		r.t.Fatalf("reopen error = %v", err)
	}
	r.Store = s
}

func (r *reopening) Reserve(ctx context.Context, p storage.ReserveParams) (storage.Outcome, *storage.Record, error) {
	r.tick()
	return r.Store.Reserve(ctx, p)
}

func (r *reopening) Lookup(ctx context.Context, id storage.ID) (*storage.Record, error) {
	r.tick()
	return r.Store.Lookup(ctx, id)
}

func (r *reopening) BatchReserve(ctx context.Context, items []storage.ReserveParams) ([]storage.ReserveResult, error) {
	r.tick()
	return r.Store.BatchReserve(ctx, items)
}

// TestDifferential makes the same random calls, batches naming a record
// more than once among them, on this store and on the memory store, and
// wants the same answers; with reopen, the store is closed and opened
// again every few calls.
func TestDifferential(t *testing.T) {
	for _, co := range []int{0, 2} {
		for _, reopen := range []bool{false, true} {
			for seed := range uint64(3) {
				t.Run(fmt.Sprintf("coalesce=%d/reopen=%t/seed=%d", co, reopen, seed), func(t *testing.T) {
					clock := clockwork.NewFakeClockAt(epoch)
					dir := t.TempDir()
					opts := []Option{WithClock(clock), WithCoalesce(co), WithSweepInterval(time.Second), withFilterMinKeys(4)}
					s, err := Open(dir, opts...)
					if err != nil {
						t.Fatalf("Open() error = %v", err)
					}
					var st storage.Store = s
					if reopen {
						st = &reopening{Store: s, t: t, dir: dir, opts: opts}
					}
					defer func() { st.Close() }()
					refClock := clockwork.NewFakeClockAt(epoch)
					ref := memory.New(memory.WithClock(refClock), memory.WithSweepInterval(time.Second))
					defer ref.Close()
					storagetest.Differential(t, storagetest.DifferentialConfig{
						Ref: ref, RefClock: refClock, Store: st, Clock: clock, Steps: 3000, Seed: seed, Repeats: true,
					})
				})
			}
		}
	}
}

// TestRawBytesMatchMemory stores IDs built from the bytes the key
// encoding escapes and ends strings with (0x00, 0x01, 0xFF), IDs that are
// prefixes of each other, and the empty tenant and namespace, then pages
// through List and reads Stats for each tenant, namespace, key prefix and
// starting key: every answer must equal the memory store's, so no tenant
// or namespace ever sees another's records.
func TestRawBytesMatchMemory(t *testing.T) {
	ctx := testCtx(t)
	clock := clockwork.NewFakeClockAt(epoch)
	s := openTest(t, t.TempDir(), clock)
	defer s.Close()
	ref := memory.New(memory.WithClock(clock), memory.WithSweepInterval(0))
	defer ref.Close()
	atoms := []string{"", "\x00", "\x00\x01", "\x00\xff", "\x01", "\xff", "a", "a\x00"}
	var strs []string
	seen := map[string]bool{}
	for _, a := range atoms {
		for _, b := range atoms {
			if !seen[a+b] {
				seen[a+b] = true
				strs = append(strs, a+b)
			}
		}
	}
	names := []string{"", "\x00", "\x00\x01", "\x00\xff", "\xff", "a\x00"}
	for _, tenant := range names {
		for _, ns := range names {
			for _, k := range strs[1:] {
				p := storage.ReserveParams{ID: storage.ID{Tenant: tenant, Namespace: ns, Key: k}, Fingerprint: []byte(tenant + "/" + ns), LeaseTTL: time.Minute, Retention: time.Hour}
				if out, _, err := s.Reserve(ctx, p); err != nil || out != storage.OutcomeReserved {
					t.Fatalf("Reserve(%q) = %v, %v; want RESERVED", p.ID, out, err)
				}
				if _, _, err := ref.Reserve(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for _, tenant := range names {
		for _, ns := range names {
			got, err := s.Stats(ctx, tenant, ns)
			want, _ := ref.Stats(ctx, tenant, ns)
			if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("Stats(%q, %q) = %v, %v; want %v", tenant, ns, got, err, want)
			}
			for _, prefix := range strs[:8] {
				for _, after := range names[:4] {
					p := storage.ListParams{Tenant: tenant, Namespace: ns, KeyPrefix: prefix, After: after, Limit: 7}
					for {
						got, more, err := s.List(ctx, p)
						want, wantMore, _ := ref.List(ctx, p)
						if err != nil || more != wantMore || len(got) != len(want) {
							t.Fatalf("List(%+v) = %d records, more %v, %v; want %d, more %v", p, len(got), more, err, len(want), wantMore)
						}
						for i := range got {
							if got[i].ID != want[i].ID || string(got[i].Fingerprint) != tenant+"/"+ns {
								t.Fatalf("List(%+v) record %d = %q, want %q", p, i, got[i].ID, want[i].ID)
							}
						}
						if !more {
							break
						}
						p.After = got[len(got)-1].Key
					}
				}
			}
		}
	}
}
