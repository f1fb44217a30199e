package redis

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/idemhq/idem/storage"
)

// slotHook records, for every EVALSHA/EVAL sent, its KEYS' hash tags.
type slotHook struct {
	mu   sync.Mutex
	bad  []string
	seen int
}

func (h *slotHook) check(c goredis.Cmder) {
	a := c.Args()
	if len(a) < 3 {
		return
	}
	name := strings.ToLower(fmt.Sprint(a[0]))
	if name != "evalsha" && name != "eval" {
		return
	}
	n := 0
	fmt.Sscan(fmt.Sprint(a[2]), &n)
	tags := map[string]bool{}
	for _, k := range a[3 : 3+n] {
		s := fmt.Sprint(k)
		i := strings.IndexByte(s, '{')
		j := strings.IndexByte(s[i+1:], '}')
		if i < 0 || j <= 0 {
			tags["<none:"+s+">"] = true
			continue
		}
		tags[s[i+1:i+1+j]] = true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen++
	if len(tags) > 1 {
		h.bad = append(h.bad, fmt.Sprint(tags))
	}
}

func (h *slotHook) DialHook(next goredis.DialHook) goredis.DialHook { return next }
func (h *slotHook) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, c goredis.Cmder) error { h.check(c); return next(ctx, c) }
}
func (h *slotHook) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cs []goredis.Cmder) error {
		for _, c := range cs {
			h.check(c)
		}
		return next(ctx, cs)
	}
}

// TestAudit12OneSlotPerScript: every script call — batches mixing tenants,
// coalesced concurrent calls of many tenants, List, Stats — names keys of
// one hash tag only (so one Redis Cluster slot).
func TestAudit12OneSlotPerScript(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := openTest(ctx, t, "coalesce=2")
	h := &slotHook{}
	s.c.AddHook(h)
	id := func(tenant, key string) storage.ID {
		return storage.ID{Tenant: tenant, Namespace: "/x.v1.X/Y", Key: key}
	}
	var items []storage.ReserveParams
	for i := range 30 {
		items = append(items, storage.ReserveParams{ID: id(fmt.Sprint("t", i%3), fmt.Sprint("k", i)), Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour})
	}
	rs, err := s.BatchReserve(ctx, items)
	if err != nil {
		t.Fatal(err)
	}
	var cps []storage.CompleteParams
	for i, r := range rs {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		cps = append(cps, storage.CompleteParams{ID: items[i].ID, Token: r.Record.Token, Retention: time.Hour})
	}
	if _, err := s.BatchComplete(ctx, cps); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := storage.ReserveParams{ID: id(fmt.Sprint("u", i%5), fmt.Sprint("c", i)), Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour}
			_, rec, err := s.Reserve(ctx, p)
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := s.Complete(ctx, storage.CompleteParams{ID: p.ID, Token: rec.Token, Retention: time.Hour}); err != nil {
				t.Error(err)
			}
			_, _ = s.Lookup(ctx, p.ID)
		}()
	}
	wg.Wait()
	for _, tn := range []string{"t0", "u1"} {
		if _, _, err := s.List(ctx, storage.ListParams{Tenant: tn, Namespace: "/x.v1.X/Y", Limit: 5}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Stats(ctx, tn, ""); err != nil {
			t.Fatal(err)
		}
	}
	if h.seen == 0 {
		t.Fatal("no script calls seen")
	}
	if len(h.bad) > 0 {
		t.Errorf("%d of %d script calls span several hash tags: %v", len(h.bad), h.seen, h.bad)
	}
}
