package storagetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

// DifferentialConfig is one Differential run.
type DifferentialConfig struct {
	// Ref is the reference store (the memory store) and RefClock its clock;
	// Store and Clock are the store under test. Both start empty.
	Ref      storage.Store
	RefClock Clock
	Store    storage.Store
	Clock    Clock
	// Steps is the number of calls; Seed picks them.
	Steps int
	Seed  uint64
	// Repeats lets one batch name a record more than once, which the
	// server never sends; stores that take it apply the items in order,
	// as the memory store does.
	Repeats bool
}

// diffTolerance bounds how far apart Differential lets the two stores'
// times be, relative to each store's first answer.
const diffTolerance = time.Second

// Differential makes the same random calls on two stores, one goroutine,
// and fails on the first answer in which they differ: outcome, error
// sentinel, every field of the records (times relative to each store's
// first answer, within diffTolerance), List pages and Stats rows. The IDs
// are chosen to be awkward: the empty tenant and namespace, characters
// special to Redis key syntax and hash tags, to SQL LIKE and to globs,
// multibyte UTF-8, and the longest names the server allows; tokens include
// the uint64 edges. Times move in steps of 5 s and every duration ends half
// a step off them, so a store whose clock also runs on its own, by less
// than that, never sits on the other side of a boundary. Before every call
// both clocks are advanced by 0, so a harness whose store's clock runs on
// its own can pin it again to the time the calls have advanced it to.
func Differential(t *testing.T, c DifferentialConfig) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	d := &diff{t: t, ctx: ctx, c: c, rng: rand.New(rand.NewPCG(c.Seed, 7)), holds: map[storage.ID]uint64{}}
	tenant := fmt.Sprintf("df-%s-%d", runID, tenantCount.Add(1))
	long := func(prefix string, n int) string {
		for len(prefix)+2 <= n {
			prefix += "é"
		}
		return prefix + strings.Repeat("x", n-len(prefix))
	}
	d.tenants = []string{tenant, tenant + "{", tenant + "}:x", long(tenant+"ü", 128), ""}
	d.namespaces = []string{"/a.v1.A/B", "", "n{s}", "n}s{", "a:1:b", "a*b?[c]\\", "%_", long("/ns-", 256)}
	d.keys = []string{"k", "k%", "k_", `k\`, "{k}", "k}", "k:1", "é", "ké", "k*", "k?", "k[1]", "K", "~", long("key-", 256), long("key-", 255) + "y"}
	d.prefixes = []string{"", "k", "k%", "k_", `k\`, "k[", "{", "é", "ké", "K", "key-", "zz"}
	for step := range c.Steps {
		d.step = step
		d.one()
		if t.Failed() {
			return
		}
	}
}

type diff struct {
	t                                   *testing.T
	ctx                                 context.Context
	c                                   DifferentialConfig
	rng                                 *rand.Rand
	step                                int
	tenants, namespaces, keys, prefixes []string
	refBase, base                       time.Time // each store's first CreatedAt
	log                                 []string
	holds                               map[storage.ID]uint64 // last RESERVED token
}

func (d *diff) pick(s []string) string { return s[d.rng.IntN(len(s))] }

// id picks the first tenant and namespace half the time, so that calls
// meet on the same records often.
func (d *diff) id() storage.ID {
	id := storage.ID{Tenant: d.tenants[0], Namespace: d.namespaces[0], Key: d.pick(d.keys)}
	if d.rng.IntN(2) == 0 {
		id.Tenant = d.pick(d.tenants)
	}
	if d.rng.IntN(2) == 0 {
		id.Namespace = d.pick(d.namespaces)
	}
	return id
}

// dur is a lease or retention: whole steps of the clock plus half a step,
// so no record's times fall on an instant the clock stops at.
func (d *diff) dur() time.Duration {
	return time.Duration(1+d.rng.IntN(6))*10*time.Second + 2500*time.Millisecond
}

func (d *diff) token(id storage.ID) uint64 {
	if tok, ok := d.holds[id]; ok && d.rng.IntN(5) != 0 {
		return tok
	}
	return []uint64{0, 1, 2, 3, 1 << 53, 1<<53 + 1, 1<<63 - 1, 1 << 63, 1<<64 - 1}[d.rng.IntN(9)]
}

func (d *diff) reserveParams() storage.ReserveParams {
	fp := []byte(d.pick([]string{"fp", "fp", "fp", "other", ""}))
	return storage.ReserveParams{ID: d.id(), Fingerprint: fp, LeaseTTL: d.dur(), Retention: d.dur()}
}

func (d *diff) completeParams(id storage.ID) storage.CompleteParams {
	res := &storage.Result{Code: int32(d.rng.IntN(2)), Body: []byte(d.pick([]string{"a", "b", ""}))}
	if d.rng.IntN(3) == 0 {
		res = nil
	}
	return storage.CompleteParams{ID: id, Token: d.token(id), Result: res, Retention: d.dur()}
}

func (d *diff) note(format string, args ...any) {
	if len(d.log) == 30 {
		d.log = d.log[1:]
	}
	d.log = append(d.log, fmt.Sprintf("%d: ", d.step)+fmt.Sprintf(format, args...))
}

func (d *diff) fail(format string, args ...any) {
	d.t.Helper()
	d.t.Fatalf("step %d: %s\ncalls so far (last 30):\n  %s", d.step, fmt.Sprintf(format, args...), strings.Join(d.log, "\n  "))
}

func (d *diff) one() {
	d.t.Helper()
	d.c.RefClock.Advance(0)
	d.c.Clock.Advance(0)
	switch n := d.rng.IntN(100); {
	case n < 10:
		adv := time.Duration(1+d.rng.IntN(4)) * 5 * time.Second
		d.note("advance %v", adv)
		d.c.RefClock.Advance(adv)
		d.c.Clock.Advance(adv)
	case n < 35:
		p := d.reserveParams()
		d.note("Reserve(%q, fp %q, lease %v, retention %v)", p.ID, p.Fingerprint, p.LeaseTTL, p.Retention)
		ro, rr, rerr := d.c.Ref.Reserve(d.ctx, p)
		o, r, err := d.c.Store.Reserve(d.ctx, p)
		d.same("Reserve", ro, o, rr, r, rerr, err)
		if o == storage.OutcomeReserved {
			d.holds[p.ID] = r.Token
		}
	case n < 50:
		p := d.completeParams(d.id())
		d.note("Complete(%q, token %d, result %+v, retention %v)", p.ID, p.Token, p.Result, p.Retention)
		rr, rerr := d.c.Ref.Complete(d.ctx, p)
		r, err := d.c.Store.Complete(d.ctx, p)
		d.same("Complete", 0, 0, rr, r, rerr, err)
	case n < 55:
		id := d.id()
		tok := d.token(id)
		d.note("Release(%q, token %d)", id, tok)
		rr, rerr := d.c.Ref.Release(d.ctx, id, tok)
		r, err := d.c.Store.Release(d.ctx, id, tok)
		d.same("Release", 0, 0, rr, r, rerr, err)
	case n < 60:
		id, ttl := d.id(), d.dur()
		tok := d.token(id)
		d.note("ExtendLease(%q, token %d, %v)", id, tok, ttl)
		rr, rerr := d.c.Ref.ExtendLease(d.ctx, id, tok, ttl)
		r, err := d.c.Store.ExtendLease(d.ctx, id, tok, ttl)
		d.same("ExtendLease", 0, 0, rr, r, rerr, err)
	case n < 65:
		id := d.id()
		tok := d.token(id)
		cp := storage.Checkpoint{Phase: d.pick([]string{"p", "", "é{}"}), Data: []byte(d.pick([]string{"", "d", "\x00\xff"}))}
		d.note("Checkpoint(%q, token %d, %+v)", id, tok, cp)
		rr, rerr := d.c.Ref.Checkpoint(d.ctx, id, tok, cp)
		r, err := d.c.Store.Checkpoint(d.ctx, id, tok, cp)
		d.same("Checkpoint", 0, 0, rr, r, rerr, err)
	case n < 72:
		id := d.id()
		d.note("Lookup(%q)", id)
		rr, rerr := d.c.Ref.Lookup(d.ctx, id)
		r, err := d.c.Store.Lookup(d.ctx, id)
		d.same("Lookup", 0, 0, rr, r, rerr, err)
	case n < 75:
		id := d.id()
		d.note("Delete(%q)", id)
		rr, rerr := d.c.Ref.Delete(d.ctx, id)
		r, err := d.c.Store.Delete(d.ctx, id)
		d.same("Delete", 0, 0, rr, r, rerr, err)
	case n < 78:
		id := d.id()
		d.note("ForceRelease(%q)", id)
		rr, rerr := d.c.Ref.ForceRelease(d.ctx, id)
		r, err := d.c.Store.ForceRelease(d.ctx, id)
		d.same("ForceRelease", 0, 0, rr, r, rerr, err)
	case n < 84:
		// One tenant and namespace; distinct IDs, as the server sends,
		// unless Repeats.
		var items []storage.ReserveParams
		first := d.reserveParams()
		seen := map[storage.ID]bool{}
		for range 1 + d.rng.IntN(6) {
			p := d.reserveParams()
			p.Tenant, p.Namespace = first.Tenant, first.Namespace
			if !seen[p.ID] || d.c.Repeats {
				seen[p.ID] = true
				items = append(items, p)
			}
		}
		d.note("BatchReserve(%d items of %q/%q: %v)", len(items), first.Tenant, first.Namespace, keysOf(items, func(p storage.ReserveParams) string { return p.Key + "/" + string(p.Fingerprint) }))
		rres, rerr := d.c.Ref.BatchReserve(d.ctx, items)
		res, err := d.c.Store.BatchReserve(d.ctx, items)
		if rerr != nil || err != nil || len(rres) != len(items) || len(res) != len(items) {
			d.fail("BatchReserve = %d results, %v; reference %d results, %v", len(res), err, len(rres), rerr)
		}
		for i := range items {
			d.same(fmt.Sprintf("BatchReserve item %d (%q)", i, items[i].Key), rres[i].Outcome, res[i].Outcome, rres[i].Record, res[i].Record, rres[i].Err, res[i].Err)
			if res[i].Outcome == storage.OutcomeReserved {
				d.holds[items[i].ID] = res[i].Record.Token
			}
		}
	case n < 90:
		var items []storage.CompleteParams
		first := d.id()
		seen := map[storage.ID]bool{}
		for range 1 + d.rng.IntN(6) {
			id := d.id()
			id.Tenant, id.Namespace = first.Tenant, first.Namespace
			if !seen[id] || d.c.Repeats {
				seen[id] = true
				items = append(items, d.completeParams(id))
			}
		}
		d.note("BatchComplete(%d items of %q/%q: %v)", len(items), first.Tenant, first.Namespace, keysOf(items, func(p storage.CompleteParams) string { return fmt.Sprintf("%s/%d", p.Key, p.Token) }))
		rres, rerr := d.c.Ref.BatchComplete(d.ctx, items)
		res, err := d.c.Store.BatchComplete(d.ctx, items)
		if rerr != nil || err != nil || len(rres) != len(items) || len(res) != len(items) {
			d.fail("BatchComplete = %d results, %v; reference %d results, %v", len(res), err, len(rres), rerr)
		}
		for i := range items {
			d.same(fmt.Sprintf("BatchComplete item %d (%q)", i, items[i].Key), 0, 0, rres[i].Record, res[i].Record, rres[i].Err, res[i].Err)
		}
	case n < 96:
		p := storage.ListParams{Tenant: d.id().Tenant, Namespace: d.pick(d.namespaces), KeyPrefix: d.pick(d.prefixes), Limit: 1 + d.rng.IntN(5)}
		if d.rng.IntN(2) == 0 {
			p.After = d.pick(slices.Concat(d.keys, []string{"", "k", "k\x7f", "j"}))
		}
		d.note("List(%+v)", p)
		rrecs, rmore, rerr := d.c.Ref.List(d.ctx, p)
		recs, more, err := d.c.Store.List(d.ctx, p)
		if (rerr == nil) != (err == nil) || rmore != more || len(rrecs) != len(recs) {
			d.fail("List = %d records, more %v, %v; reference %d records, more %v, %v\n  got %v\n  want %v", len(recs), more, err, len(rrecs), rmore, rerr, recKeys(recs), recKeys(rrecs))
		}
		for i := range recs {
			d.same(fmt.Sprintf("List record %d", i), 0, 0, rrecs[i], recs[i], nil, nil)
		}
	default:
		tenant, ns := d.id().Tenant, ""
		if d.rng.IntN(2) == 0 {
			ns = d.pick(d.namespaces)
		}
		d.note("Stats(%q, %q)", tenant, ns)
		rrows, rerr := d.c.Ref.Stats(d.ctx, tenant, ns)
		rows, err := d.c.Store.Stats(d.ctx, tenant, ns)
		if (rerr == nil) != (err == nil) || !slices.Equal(rows, rrows) {
			d.fail("Stats(%q, %q) = %+v, %v; reference %+v, %v", tenant, ns, rows, err, rrows, rerr)
		}
	}
}

func keysOf[P any](items []P, f func(P) string) []string {
	out := make([]string, len(items))
	for i, p := range items {
		out[i] = f(p)
	}
	return out
}

func recKeys(recs []*storage.Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, fmt.Sprintf("%q/%q/%q", r.Tenant, r.Namespace, r.Key))
	}
	return out
}

// same fails unless the two answers agree.
func (d *diff) same(op string, ro, o storage.Outcome, rr, r *storage.Record, rerr, err error) {
	d.t.Helper()
	if ro != o {
		d.fail("%s outcome = %v, reference %v", op, o, ro)
	}
	for _, s := range []error{storage.ErrNotFound, storage.ErrLeaseLost, storage.ErrNotInProgress} {
		if errors.Is(rerr, s) != errors.Is(err, s) {
			d.fail("%s error = %v, reference %v", op, err, rerr)
		}
	}
	if (rerr == nil) != (err == nil) {
		d.fail("%s error = %v, reference %v", op, err, rerr)
	}
	if (rr == nil) != (r == nil) {
		d.fail("%s record = %+v, reference %+v", op, r, rr)
	}
	if r == nil {
		return
	}
	if d.base.IsZero() {
		d.refBase, d.base = rr.CreatedAt, r.CreatedAt
	}
	g := r.Clone()
	for _, f := range []struct {
		g *time.Time
		w time.Time
	}{{&g.CreatedAt, rr.CreatedAt}, {&g.LeaseExpiresAt, rr.LeaseExpiresAt}, {&g.CompletedAt, rr.CompletedAt}, {&g.ExpiresAt, rr.ExpiresAt}} {
		if f.g.IsZero() || f.w.IsZero() {
			continue
		}
		// Times relative to each store's first answer, within what a
		// pinned clock runs on its own between two calls.
		if dd := f.g.Sub(d.base) - f.w.Sub(d.refBase); dd > -diffTolerance && dd < diffTolerance {
			*f.g = f.w
		}
	}
	if diff := diffRecord(g, rr); diff != "" {
		d.fail("%s record differs from the reference's:\n%s", op, diff)
	}
}
