package storagetest

import (
	"fmt"
	"slices"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/idemhq/idem/storage"
)

func testAdmin(t *testing.T, h Harness) {
	t.Run("Delete", func(t *testing.T) {
		shared := newEnv(t, h)
		for _, state := range []storage.State{storage.StateInProgress, storage.StateCompleted, storage.StateReleased} {
			t.Run(state.String(), func(t *testing.T) {
				e := shared.sub(t, state.String())
				id := e.id("k")
				e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
				switch state {
				case storage.StateCompleted:
					e.complete(id, 1, bigResult("d"), retention)
				case storage.StateReleased:
					e.release(id, 1)
				}
				before := e.lookup(id)
				got, err := e.s.Delete(e.ctx, id)
				if err != nil {
					t.Fatalf("Delete() error = %v, want nil", err)
				}
				if d := diffRecord(got, before); d != "" {
					t.Fatalf("Delete() returned record:\n%s", d)
				}
				e.wantAbsent(id)
				_, err = e.s.Delete(e.ctx, id)
				wantErr(t, "Delete() again", err, storage.ErrNotFound)
				if r := e.mustReserve(rp(id, "other", ttl, retention), storage.OutcomeReserved); r.Token != 1 || r.Attempts != 1 {
					t.Fatalf("Reserve() after Delete token %d attempts %d, want 1 and 1", r.Token, r.Attempts)
				}
			})
		}
	})

	t.Run("DeleteAbsent", func(t *testing.T) {
		e := newEnv(t, h)
		_, err := e.s.Delete(e.ctx, e.id("nope"))
		wantErr(t, "Delete(absent)", err, storage.ErrNotFound)
	})

	t.Run("ForceRelease", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		got, err := e.s.ForceRelease(e.ctx, id)
		if err != nil {
			t.Fatalf("ForceRelease() error = %v, want nil", err)
		}
		want := first.Clone()
		want.State = storage.StateReleased
		want.LeaseExpiresAt = got.LeaseExpiresAt
		if d := diffRecord(got, want); d != "" {
			t.Fatalf("ForceRelease() record:\n%s", d)
		}
		e.wantUnchanged(got)
		again, err := e.s.ForceRelease(e.ctx, id)
		if err != nil {
			t.Fatalf("ForceRelease() on RELEASED error = %v, want nil", err)
		}
		if d := diffRecord(again, got); d != "" {
			t.Fatalf("ForceRelease() on RELEASED record:\n%s", d)
		}
		// The old holder lost the record: finishing or working on it fails;
		// its own Release is an idempotent retry on a released record.
		_, err = e.s.Complete(e.ctx, storage.CompleteParams{ID: id, Token: first.Token, Result: bigResult("old"), Retention: retention})
		wantErr(t, "Complete(force-released, before takeover)", err, storage.ErrLeaseLost)
		_, err = e.s.ExtendLease(e.ctx, id, first.Token, ttl)
		wantErr(t, "ExtendLease(force-released)", err, storage.ErrLeaseLost)
		_, err = e.s.Checkpoint(e.ctx, id, first.Token, storage.Checkpoint{Phase: "p"})
		wantErr(t, "Checkpoint(force-released)", err, storage.ErrLeaseLost)
		if rel := e.release(id, first.Token); rel.State != storage.StateReleased {
			t.Fatalf("Release(force-released) state = %v, want RELEASED", rel.State)
		}
		e.wantUnchanged(got)
		next := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		if next.Token != first.Token+1 {
			t.Fatalf("Reserve() after ForceRelease token = %d, want %d", next.Token, first.Token+1)
		}
		_, err = e.s.Complete(e.ctx, storage.CompleteParams{ID: id, Token: first.Token, Result: bigResult("old"), Retention: retention})
		wantErr(t, "Complete(force-released token)", err, storage.ErrLeaseLost)
		e.wantUnchanged(next)
		e.complete(id, next.Token, bigResult("new"), retention)
	})

	t.Run("ForceReleaseRefused", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		done := e.complete(id, 1, bigResult("c"), retention)
		_, err := e.s.ForceRelease(e.ctx, id)
		wantErr(t, "ForceRelease(COMPLETED)", err, storage.ErrNotInProgress)
		e.wantUnchanged(done)
		_, err = e.s.ForceRelease(e.ctx, e.id("nope"))
		wantErr(t, "ForceRelease(absent)", err, storage.ErrNotFound)
	})

	t.Run("List", func(t *testing.T) {
		e := newEnv(t, h)
		keys := []string{"b/2", "a", "b/1", "c", "b/10", "b", "ab", "b/3"}
		for _, k := range keys {
			e.mustReserve(rp(e.id(k), "fp", ttl, retention), storage.OutcomeReserved)
		}
		// Noise: same keys elsewhere, and an expired record in the namespace.
		other := *e
		other.tenant += "-other"
		otherNS := *e
		otherNS.ns += "-other"
		for _, k := range keys {
			other.mustReserve(rp(other.id(k), "fp", ttl, retention), storage.OutcomeReserved)
			otherNS.mustReserve(rp(otherNS.id(k), "fp", ttl, retention), storage.OutcomeReserved)
		}
		otherNS.mustReserve(rp(otherNS.id("zzz"), "fp", ttl, retention), storage.OutcomeReserved)
		e.mustReserve(rp(e.id("b/0-expired"), "fp", time.Second, time.Second), storage.OutcomeReserved)
		e.advance(2 * time.Second)
		e.complete(e.id("c"), 1, bigResult("c"), retention)

		sorted := slices.Clone(keys)
		slices.Sort(sorted)
		list := func(t *testing.T, p storage.ListParams) ([]string, bool) {
			t.Helper()
			p.Tenant, p.Namespace = e.tenant, e.ns
			recs, more, err := e.s.List(e.ctx, p)
			if err != nil {
				t.Fatalf("List(%+v) error = %v, want nil", p, err)
			}
			var got []string
			for _, r := range recs {
				if r.Tenant != e.tenant || r.Namespace != e.ns {
					t.Fatalf("List(%+v) returned record of %q/%q, want %q/%q", p, r.Tenant, r.Namespace, e.tenant, e.ns)
				}
				got = append(got, r.Key)
			}
			return got, more
		}
		for _, tc := range []struct {
			name     string
			p        storage.ListParams
			want     []string
			wantMore bool
		}{
			{"All", storage.ListParams{Limit: 100}, sorted, false},
			{"ExactlyLimit", storage.ListParams{Limit: len(keys)}, sorted, false},
			{"FirstPage", storage.ListParams{Limit: 3}, sorted[:3], true},
			{"After", storage.ListParams{After: sorted[2], Limit: 3}, sorted[3:6], true},
			{"LastPage", storage.ListParams{After: sorted[5], Limit: 3}, sorted[6:], false},
			{"AfterMissingKey", storage.ListParams{After: "aa", Limit: 100}, []string{"ab", "b", "b/1", "b/10", "b/2", "b/3", "c"}, false},
			{"AfterEnd", storage.ListParams{After: "zzz", Limit: 100}, nil, false},
			{"Prefix", storage.ListParams{KeyPrefix: "b/", Limit: 100}, []string{"b/1", "b/10", "b/2", "b/3"}, false},
			{"PrefixPaged", storage.ListParams{KeyPrefix: "b/", Limit: 2}, []string{"b/1", "b/10"}, true},
			{"PrefixAfter", storage.ListParams{KeyPrefix: "b/", After: "b/10", Limit: 2}, []string{"b/2", "b/3"}, false},
			{"PrefixNone", storage.ListParams{KeyPrefix: "x", Limit: 100}, nil, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, more := list(t, tc.p)
				if !slices.Equal(got, tc.want) || more != tc.wantMore {
					t.Fatalf("List(%+v) = %q, more %v; want %q, more %v", tc.p, got, more, tc.want, tc.wantMore)
				}
			})
		}
		t.Run("WalkPages", func(t *testing.T) {
			var got []string
			p := storage.ListParams{Limit: 1}
			for range 100 {
				page, more := list(t, p)
				got = append(got, page...)
				if !more {
					break
				}
				if len(page) == 0 {
					t.Fatalf("List(%+v) = empty page with more = true", p)
				}
				p.After = page[len(page)-1]
			}
			if !slices.Equal(got, sorted) {
				t.Fatalf("List() pages = %q, want %q", got, sorted)
			}
		})
		t.Run("RecordsAreFull", func(t *testing.T) {
			e := e.with(t)
			recs, _, err := e.s.List(e.ctx, storage.ListParams{Tenant: e.tenant, Namespace: e.ns, KeyPrefix: "c", Limit: 10})
			if err != nil || len(recs) != 1 {
				t.Fatalf("List(prefix c) = %d records, %v; want 1, nil", len(recs), err)
			}
			if d := diffRecord(recs[0], e.lookup(e.id("c"))); d != "" {
				t.Fatalf("List() record differs from Lookup():\n%s", d)
			}
		})
	})

	t.Run("ListByteOrderAndWildcards", func(t *testing.T) {
		// Key order is byte order (no collation), and a prefix is literal:
		// SQL LIKE wildcards and regexp metacharacters match only themselves.
		e := newEnv(t, h)
		keys := []string{"a_c", "B", "a%c", "ab", "aXc", "a b", "é", "Z-9", "a.c", `a\c`, "a*c", "a", "~", "a[c]"}
		for _, k := range keys {
			e.mustReserve(rp(e.id(k), "fp", ttl, retention), storage.OutcomeReserved)
		}
		sorted := slices.Clone(keys)
		slices.Sort(sorted)
		for _, tc := range []struct {
			name string
			p    storage.ListParams
			want []string
		}{
			{"All", storage.ListParams{Limit: 100}, sorted},
			{"Underscore", storage.ListParams{KeyPrefix: "a_", Limit: 100}, []string{"a_c"}},
			{"Percent", storage.ListParams{KeyPrefix: "a%", Limit: 100}, []string{"a%c"}},
			{"Backslash", storage.ListParams{KeyPrefix: `a\`, Limit: 100}, []string{`a\c`}},
			{"Dot", storage.ListParams{KeyPrefix: "a.", Limit: 100}, []string{"a.c"}},
			{"Star", storage.ListParams{KeyPrefix: "a*", Limit: 100}, []string{"a*c"}},
			{"Bracket", storage.ListParams{KeyPrefix: "a[", Limit: 100}, []string{"a[c]"}},
			{"UpperAfterLower", storage.ListParams{After: "Z-9", Limit: 2}, []string{"a", "a b"}},
			{"AfterUnicode", storage.ListParams{After: "~", Limit: 100}, []string{"é"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				tc.p.Tenant, tc.p.Namespace = e.tenant, e.ns
				recs, _, err := e.s.List(e.ctx, tc.p)
				if err != nil {
					t.Fatalf("List(%+v) error = %v, want nil", tc.p, err)
				}
				var got []string
				for _, r := range recs {
					got = append(got, r.Key)
				}
				if !slices.Equal(got, tc.want) {
					t.Fatalf("List(%+v) = %q, want %q", tc.p, got, tc.want)
				}
			})
		}
	})

	t.Run("Stats", func(t *testing.T) {
		e := newEnv(t, h)
		ns1, ns2 := e.ns+"/a", e.ns+"/b"
		mk := func(ns, key string, state storage.State, ret time.Duration) {
			id := storage.ID{Tenant: e.tenant, Namespace: ns, Key: key}
			e.mustReserve(rp(id, "fp", ttl, ret), storage.OutcomeReserved)
			switch state {
			case storage.StateCompleted:
				e.complete(id, 1, nil, ret)
			case storage.StateReleased:
				e.release(id, 1)
			}
		}
		for i := range 3 {
			mk(ns1, fmt.Sprint("ip", i), storage.StateInProgress, retention)
		}
		mk(ns1, "done", storage.StateCompleted, retention)
		mk(ns1, "rel1", storage.StateReleased, retention)
		mk(ns1, "rel2", storage.StateReleased, retention)
		for i := range 4 {
			mk(ns2, fmt.Sprint("done", i), storage.StateCompleted, retention)
		}
		// Expired records and another tenant's records are not counted.
		mk(ns1, "gone", storage.StateCompleted, time.Minute)
		mk(ns2, "gone", storage.StateReleased, time.Minute)
		e.advance(ttl + time.Minute)
		other := *e
		other.tenant += "-other"
		other.mustReserve(rp(storage.ID{Tenant: other.tenant, Namespace: ns1, Key: "x"}, "fp", ttl, retention), storage.OutcomeReserved)

		all := []storage.StatsRow{
			{Namespace: ns1, State: storage.StateInProgress, Count: 3},
			{Namespace: ns1, State: storage.StateCompleted, Count: 1},
			{Namespace: ns1, State: storage.StateReleased, Count: 2},
			{Namespace: ns2, State: storage.StateCompleted, Count: 4},
		}
		storage.SortStats(all)
		for _, tc := range []struct {
			name, ns string
			want     []storage.StatsRow
		}{
			{"AllNamespaces", "", all},
			{"OneNamespace", ns2, all[3:]},
			{"EmptyNamespace", e.ns + "/none", nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, err := e.s.Stats(e.ctx, e.tenant, tc.ns)
				if err != nil {
					t.Fatalf("Stats(%q) error = %v, want nil", tc.ns, err)
				}
				if !slices.Equal(got, tc.want) {
					t.Fatalf("Stats(%q) = %+v, want %+v", tc.ns, got, tc.want)
				}
			})
		}
	})
}

func testIsolation(t *testing.T, h Harness) {
	t.Run("TenantsAndNamespaces", func(t *testing.T) { testTenantsAndNamespaces(t, h) })
	t.Run("LongestIDs", func(t *testing.T) { testLongestIDs(t, h) })
	t.Run("EmptyTenant", func(t *testing.T) {
		// The empty tenant is a tenant like any other, not "every tenant":
		// its List and Stats see its records alone, and others' never see it.
		e := newEnv(t, h)
		mine, empty := e.id("k"), storage.ID{Tenant: "", Namespace: e.ns, Key: "k"}
		e.mustReserve(rp(mine, "fp", ttl, retention), storage.OutcomeReserved)
		e.mustReserve(rp(storage.ID{Tenant: e.tenant, Namespace: e.ns + "/other", Key: "k"}, "fp", ttl, retention), storage.OutcomeReserved)
		e.mustReserve(rp(empty, "fp", ttl, retention), storage.OutcomeReserved)
		e.complete(empty, 1, nil, retention)
		for _, tc := range []struct {
			tenant string
			want   []storage.StatsRow
		}{
			{"", []storage.StatsRow{{Namespace: e.ns, State: storage.StateCompleted, Count: 1}}},
			{e.tenant, []storage.StatsRow{{Namespace: e.ns, State: storage.StateInProgress, Count: 1}, {Namespace: e.ns + "/other", State: storage.StateInProgress, Count: 1}}},
		} {
			for _, ns := range []string{"", e.ns} {
				want := tc.want
				if ns != "" {
					want = want[:1]
				}
				got, err := e.s.Stats(e.ctx, tc.tenant, ns)
				if err != nil || !slices.Equal(got, want) {
					t.Fatalf("Stats(%q, %q) = %+v, %v; want %+v", tc.tenant, ns, got, err, want)
				}
			}
			recs, _, err := e.s.List(e.ctx, storage.ListParams{Tenant: tc.tenant, Namespace: e.ns, Limit: 10})
			if err != nil || len(recs) != 1 || recs[0].Tenant != tc.tenant {
				t.Fatalf("List(tenant %q) = %d records, %v; want its one record", tc.tenant, len(recs), err)
			}
		}
	})

	t.Run("NoSeparatorCollisions", func(t *testing.T) {
		// Backends that join ID parts into one key must do so unambiguously.
		e := newEnv(t, h)
		tn := e.tenant
		ids := []storage.ID{
			{Tenant: tn, Namespace: "a:b", Key: "c"},
			{Tenant: tn, Namespace: "a", Key: "b:c"},
			{Tenant: tn + ":a", Namespace: "b", Key: "c"},
			{Tenant: tn, Namespace: "a/b", Key: "c"},
			{Tenant: tn, Namespace: "a", Key: "b/c"},
			{Tenant: tn, Namespace: "a|b", Key: "c"},
			{Tenant: tn, Namespace: "a", Key: "b|c"},
			{Tenant: tn, Namespace: "{a}", Key: "c"},
			{Tenant: tn, Namespace: "a", Key: "{c}"},
			{Tenant: tn, Namespace: "a", Key: "c "},
			{Tenant: tn, Namespace: "a ", Key: "c"},
		}
		for i, id := range ids {
			got := e.mustReserve(rp(id, fmt.Sprint("fp-", i), ttl, retention), storage.OutcomeReserved)
			if got.Token != 1 || got.ID != id {
				t.Fatalf("Reserve(%+v) = token %d id %+v, want token 1 and its own id", id, got.Token, got.ID)
			}
		}
		for i, id := range ids {
			if got := e.lookup(id); string(got.Fingerprint) != fmt.Sprint("fp-", i) || got.ID != id {
				t.Fatalf("Lookup(%+v) = id %+v fp %q, want its own id and fp-%d", id, got.ID, got.Fingerprint, i)
			}
		}
	})
}

func testLongestIDs(t *testing.T, h Harness) {
	// The default limits: tenant 128 B, namespace and key 256 B of UTF-8.
	e := newEnv(t, h)
	pad := func(s string, n int) string { // multibyte runes, then ASCII to end
		for len(s)+3 <= n {
			s += "é"
		}
		for len(s) < n {
			s += "x"
		}
		return s
	}
	e.tenant = pad(e.tenant+"-", 128)
	e.ns = pad("/long.v1.Service/", 256)
	id := e.id(pad("key-", 256))
	twin := e.id(id.Key[:255] + "y")
	for _, x := range []string{id.Tenant, id.Namespace, id.Key, twin.Key} {
		if !utf8.ValidString(x) {
			t.Fatalf("storagetest: padded name %q is not UTF-8", x)
		}
	}
	if len(id.Tenant) != 128 || len(id.Namespace) != 256 || len(id.Key) != 256 {
		t.Fatalf("storagetest: ID lengths %d/%d/%d, want 128/256/256", len(id.Tenant), len(id.Namespace), len(id.Key))
	}
	rec := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
	if rec.ID != id {
		t.Fatalf("Reserve() ID = %+v, want %+v", rec.ID, id)
	}
	if got := e.mustReserve(rp(twin, "fp", ttl, retention), storage.OutcomeReserved); got.Token != 1 {
		t.Fatalf("Reserve(key differing in its last byte) token = %d, want 1", got.Token)
	}
	done := e.complete(id, 1, bigResult("long"), retention)
	e.wantUnchanged(done)
	recs, _, err := e.s.List(e.ctx, storage.ListParams{Tenant: id.Tenant, Namespace: id.Namespace, Limit: 10})
	if err != nil || len(recs) != 2 || recs[0].ID != id || recs[1].ID != twin {
		t.Fatalf("List() = %d records, %v; want %q then %q", len(recs), err, id.Key, twin.Key)
	}
	rows, err := e.s.Stats(e.ctx, id.Tenant, id.Namespace)
	want := []storage.StatsRow{{Namespace: id.Namespace, State: storage.StateInProgress, Count: 1}, {Namespace: id.Namespace, State: storage.StateCompleted, Count: 1}}
	storage.SortStats(want)
	if err != nil || !slices.Equal(rows, want) {
		t.Fatalf("Stats() = %+v, %v; want %+v", rows, err, want)
	}
}

func testTenantsAndNamespaces(t *testing.T, h Harness) {
	e := newEnv(t, h)
	ids := []storage.ID{
		{Tenant: e.tenant, Namespace: e.ns, Key: "k"},
		{Tenant: e.tenant + "-2", Namespace: e.ns, Key: "k"},
		{Tenant: e.tenant, Namespace: e.ns + "-2", Key: "k"},
		{Tenant: e.tenant + "-2", Namespace: e.ns + "-2", Key: "k"},
	}
	for i, id := range ids {
		got := e.mustReserve(rp(id, fmt.Sprint("fp-", i), ttl, retention), storage.OutcomeReserved)
		if got.Token != 1 || got.ID != id {
			t.Fatalf("Reserve(%+v) = token %d id %+v, want token 1 and its own id", id, got.Token, got.ID)
		}
	}
	e.complete(ids[0], 1, bigResult("zero"), retention)
	e.release(ids[1], 1)
	if _, err := e.s.Delete(e.ctx, ids[2]); err != nil {
		t.Fatalf("Delete(%+v) error = %v, want nil", ids[2], err)
	}
	if got := e.lookup(ids[0]); got.State != storage.StateCompleted || string(got.Fingerprint) != "fp-0" {
		t.Fatalf("Lookup(%+v) = %v %q, want COMPLETED fp-0", ids[0], got.State, got.Fingerprint)
	}
	if got := e.lookup(ids[1]); got.State != storage.StateReleased || string(got.Fingerprint) != "fp-1" {
		t.Fatalf("Lookup(%+v) = %v %q, want RELEASED fp-1", ids[1], got.State, got.Fingerprint)
	}
	e.wantAbsent(ids[2])
	if got := e.lookup(ids[3]); got.State != storage.StateInProgress || string(got.Fingerprint) != "fp-3" {
		t.Fatalf("Lookup(%+v) = %v %q, want IN_PROGRESS fp-3", ids[3], got.State, got.Fingerprint)
	}
}

// scribble changes every field of a record a store handed out, deep.
func scribble(r *storage.Record) {
	if r == nil {
		return
	}
	for i := range r.Fingerprint {
		r.Fingerprint[i] ^= 0xff
	}
	r.Key += "-scribbled"
	r.Token += 100
	r.Attempts += 100
	r.State = storage.StateReleased
	r.ExpiresAt = r.ExpiresAt.Add(-1000 * time.Hour)
	if r.Result != nil {
		r.Result.Code++
		for i := range r.Result.Body {
			r.Result.Body[i] ^= 0xff
		}
		for i := range r.Result.Details {
			r.Result.Details[i].TypeURL += "-x"
			for j := range r.Result.Details[i].Value {
				r.Result.Details[i].Value[j] ^= 0xff
			}
		}
		for k := range r.Result.Metadata {
			r.Result.Metadata[k] += "-x"
		}
		if r.Result.Metadata != nil {
			r.Result.Metadata["added"] = "x"
		}
		r.Result.Details = r.Result.Details[:0]
	}
	if r.Checkpoint != nil {
		r.Checkpoint.Phase += "-x"
		for i := range r.Checkpoint.Data {
			r.Checkpoint.Data[i] ^= 0xff
		}
	}
}

func testCopies(t *testing.T, h Harness) {
	t.Run("Arguments", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		p := rp(id, "fp", ttl, retention)
		e.mustReserve(p, storage.OutcomeReserved)
		p.Fingerprint[0] = 'X'
		cp := storage.Checkpoint{Phase: "p", Data: []byte("data")}
		if _, err := e.s.Checkpoint(e.ctx, id, 1, cp); err != nil {
			t.Fatalf("Checkpoint() error = %v, want nil", err)
		}
		cp.Data[0] = 'X'
		res := bigResult("r")
		e.complete(id, 1, res, retention)
		res.Body[0] = 'X'
		res.Metadata["x-a"] = "mutated"
		res.Details[0].Value[0] = 'X'
		got := e.lookup(id)
		if string(got.Fingerprint) != "fp" || !sameCheckpoint(got.Checkpoint, &storage.Checkpoint{Phase: "p", Data: []byte("data")}) || !got.Result.Equal(bigResult("r")) {
			t.Fatalf("Lookup() after mutating the arguments = fp %q checkpoint %+v result %+v; want what was passed", got.Fingerprint, got.Checkpoint, got.Result)
		}
	})

	shared := newEnv(t, h)
	// Each op's returned record is scribbled on; the stored record must not move.
	for _, tc := range []struct {
		name string
		op   func(e *env, id storage.ID) *storage.Record
	}{
		{"Reserve", func(e *env, id storage.ID) *storage.Record {
			_, r := e.reserve(rp(id, "fp", ttl, retention))
			return r
		}},
		{"Lookup", func(e *env, id storage.ID) *storage.Record { return e.lookup(id) }},
		{"Complete", func(e *env, id storage.ID) *storage.Record { return e.complete(id, 2, bigResult("c"), retention) }},
		{"CompleteRetry", func(e *env, id storage.ID) *storage.Record {
			e.complete(id, 2, bigResult("c"), retention)
			return e.complete(id, 2, bigResult("c"), retention)
		}},
		{"ReserveCompleted", func(e *env, id storage.ID) *storage.Record {
			e.complete(id, 2, bigResult("c"), retention)
			_, r := e.reserve(rp(id, "fp", ttl, retention))
			return r
		}},
		{"Release", func(e *env, id storage.ID) *storage.Record { return e.release(id, 2) }},
		{"ExtendLease", func(e *env, id storage.ID) *storage.Record {
			r, err := e.s.ExtendLease(e.ctx, id, 2, ttl)
			if err != nil {
				e.t.Fatalf("ExtendLease() error = %v", err)
			}
			return r
		}},
		{"Checkpoint", func(e *env, id storage.ID) *storage.Record {
			r, err := e.s.Checkpoint(e.ctx, id, 2, storage.Checkpoint{Phase: "q", Data: []byte("new")})
			if err != nil {
				e.t.Fatalf("Checkpoint() error = %v", err)
			}
			return r
		}},
		{"ForceRelease", func(e *env, id storage.ID) *storage.Record {
			r, err := e.s.ForceRelease(e.ctx, id)
			if err != nil {
				e.t.Fatalf("ForceRelease() error = %v", err)
			}
			return r
		}},
		{"List", func(e *env, id storage.ID) *storage.Record {
			e.complete(id, 2, bigResult("c"), retention)
			recs, _, err := e.s.List(e.ctx, storage.ListParams{Tenant: id.Tenant, Namespace: id.Namespace, Limit: 10})
			if err != nil || len(recs) != 1 {
				e.t.Fatalf("List() = %d records, %v; want 1", len(recs), err)
			}
			return recs[0]
		}},
		{"BatchReserve", func(e *env, id storage.ID) *storage.Record {
			e.complete(id, 2, bigResult("c"), retention)
			return e.batchReserve([]storage.ReserveParams{rp(id, "fp", ttl, retention)})[0].Record
		}},
		{"BatchComplete", func(e *env, id storage.ID) *storage.Record {
			return e.batchComplete([]storage.CompleteParams{{ID: id, Token: 2, Result: bigResult("c"), Retention: retention}})[0].Record
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := shared.sub(t, tc.name)
			id := e.id("k")
			// A record with every field set: fingerprint, checkpoint, token 2.
			e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
			if _, err := e.s.Checkpoint(e.ctx, id, 1, storage.Checkpoint{Phase: "p", Data: []byte("data")}); err != nil {
				t.Fatalf("Checkpoint() error = %v", err)
			}
			e.advance(ttl + time.Second)
			e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
			got := tc.op(e, id)
			if got == nil {
				t.Fatalf("%s() record = nil, want a record", tc.name)
			}
			want := got.Clone()
			scribble(got)
			e.wantUnchanged(want)
		})
	}
}
