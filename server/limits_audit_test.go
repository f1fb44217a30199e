package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/storage"
)

// textOf is exactly n bytes of printable UTF-8 starting with tag, mostly
// multi-byte runes (4-, 2-, then 1-byte), so a limit counted in runes
// rather than bytes shows.
func textOf(tag string, n int) string {
	if len(tag) > n {
		panic(fmt.Sprintf("textOf: tag %q longer than %d", tag, n))
	}
	var b strings.Builder
	b.WriteString(tag)
	for b.Len()+4 <= n {
		b.WriteString("😀")
	}
	for b.Len()+2 <= n {
		b.WriteString("é")
	}
	for b.Len() < n {
		b.WriteByte('x')
	}
	return b.String()
}

// auditConfigs are the server limits the entry-point audit runs under: the
// design's defaults, every limit lowered, and every limit raised. Whatever
// an operator configures must be what every entry point enforces.
func auditConfigs() []struct {
	name string
	l    Limits
} {
	return []struct {
		name string
		l    Limits
	}{
		{"defaults", DefaultLimits()},
		{"lowered", Limits{
			MaxKeyBytes: 16, MaxNamespaceBytes: 24, MaxTenantBytes: 8, MaxFingerprintBytes: 4, MaxPhaseBytes: 6,
			MaxResultBytes: 64,
			MinLease:       2 * time.Second, MaxLease: 5 * time.Second,
			MinRetention: 2 * time.Second, MaxRetention: 20 * time.Second,
			MaxWait: 3 * time.Second, MaxBatch: 3,
		}},
		{"raised", Limits{
			MaxKeyBytes: 512, MaxNamespaceBytes: 300, MaxTenantBytes: 200, MaxFingerprintBytes: 96, MaxPhaseBytes: 400,
			MaxResultBytes: 2 << 20,
			MinLease:       100 * time.Millisecond, MaxLease: 2 * time.Hour,
			MinRetention: 500 * time.Millisecond, MaxRetention: 60 * 24 * time.Hour,
			MaxWait: 45 * time.Second, MaxBatch: 1200,
		}},
	}
}

// TestEveryEntryPointHonoursConfiguredLimits: under the default, lowered
// and raised limits, every data-plane and admin RPC accepts each value
// exactly at its limit (all at once, byte for byte) and refuses one past
// it with INVALID_ARGUMENT naming the field, leaving every record as it was.
func TestEveryEntryPointHonoursConfiguredLimits(t *testing.T) {
	for _, cfg := range auditConfigs() {
		t.Run(cfg.name, func(t *testing.T) { auditEntryPoints(t, cfg.l) })
	}
}

func auditEntryPoints(t *testing.T, cfg Limits) {
	e := newEnv(t, WithLimits(cfg))
	l := e.svc.Limits()
	ctx := testContext(t)
	dur := durationpb.New

	tenant := textOf("t", l.MaxTenantBytes)
	ns := textOf("/n", l.MaxNamespaceBytes)
	key := func(tag string) string { return textOf(tag, l.MaxKeyBytes) }
	fp := bytes.Repeat([]byte{0xfe}, l.MaxFingerprintBytes)
	phase := textOf("p", l.MaxPhaseBytes)
	data := bytes.Repeat([]byte{0x00, 0xff}, l.MaxResultBytes/2+1)[:l.MaxResultBytes]
	result := func(n int) *idemv1.Result {
		if n >= 64 {
			return resultOfSize(n)
		}
		return &idemv1.Result{Code: 3, Body: bytes.Repeat([]byte{'b'}, n)}
	}

	// (a) Every value at its limit, through every entry point.
	reserve := func(k string, mod func(*idemv1.ReserveRequest)) *idemv1.ReserveResponse {
		t.Helper()
		r := &idemv1.ReserveRequest{Tenant: tenant, Namespace: ns, Key: k, Fingerprint: fp}
		if mod != nil {
			mod(r)
		}
		resp, err := e.idem.Reserve(ctx, r)
		if err != nil {
			t.Fatalf("Reserve(%q) at the limits error = %v", k, err)
		}
		if resp.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
			t.Fatalf("Reserve(%q) outcome = %v, want RESERVED", k, resp.GetOutcome())
		}
		rec := resp.GetRecord()
		if rec.GetTenant() != tenant || rec.GetNamespace() != ns || rec.GetKey() != k || !bytes.Equal(rec.GetFingerprint(), fp) {
			t.Fatalf("Reserve(%q) record = %q/%q/%q fp %x, want the request's byte for byte", k, rec.GetTenant(), rec.GetNamespace(), rec.GetKey(), rec.GetFingerprint())
		}
		return resp
	}
	ka := key("a")
	ra := reserve(ka, func(r *idemv1.ReserveRequest) {
		r.LeaseTtl, r.Retention, r.Wait = dur(l.MaxLease), dur(l.MaxRetention), dur(l.MaxWait)
	})
	tokA := ra.GetRecord().GetToken()
	if got := ra.GetRecord().GetLeaseExpiresAt().AsTime().Sub(ra.GetRecord().GetCreatedAt().AsTime()); got != l.MaxLease {
		t.Errorf("lease at MaxLease = %v, want %v", got, l.MaxLease)
	}
	kb := key("b")
	tokB := reserve(kb, func(r *idemv1.ReserveRequest) { r.LeaseTtl, r.Retention = dur(l.MinLease), dur(l.MinRetention) }).GetRecord().GetToken()

	if _, err := e.idem.ExtendLease(ctx, &idemv1.ExtendLeaseRequest{Tenant: tenant, Namespace: ns, Key: ka, Token: tokA, LeaseTtl: dur(l.MinLease)}); err != nil {
		t.Errorf("ExtendLease(MinLease) error = %v", err)
	}
	if _, err := e.idem.ExtendLease(ctx, &idemv1.ExtendLeaseRequest{Tenant: tenant, Namespace: ns, Key: ka, Token: tokA, LeaseTtl: dur(l.MaxLease)}); err != nil {
		t.Errorf("ExtendLease(MaxLease) error = %v", err)
	}
	if _, err := e.idem.Checkpoint(ctx, &idemv1.CheckpointRequest{Tenant: tenant, Namespace: ns, Key: ka, Token: tokA, Phase: phase, Data: data}); err != nil {
		t.Errorf("Checkpoint(phase %d B, data %d B) error = %v", len(phase), len(data), err)
	}
	lk, err := e.idem.Lookup(ctx, &idemv1.LookupRequest{Tenant: tenant, Namespace: ns, Key: ka})
	if err != nil {
		t.Fatalf("Lookup() at the limits error = %v", err)
	}
	if cp := lk.GetRecord().GetCheckpoint(); cp.GetPhase() != phase || !bytes.Equal(cp.GetData(), data) {
		t.Errorf("Lookup() checkpoint = %q + %d bytes, want %q + %d bytes byte for byte", cp.GetPhase(), len(cp.GetData()), phase, len(data))
	}
	resA := result(l.MaxResultBytes)
	if _, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Tenant: tenant, Namespace: ns, Key: ka, Token: tokA, Result: resA, Retention: dur(l.MaxRetention)}); err != nil {
		t.Errorf("Complete(result %d B, retention %v) error = %v", l.MaxResultBytes, l.MaxRetention, err)
	}
	if again, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Tenant: tenant, Namespace: ns, Key: ka, Fingerprint: fp}); err != nil ||
		again.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED || !bytes.Equal(again.GetRecord().GetResult().GetBody(), resA.GetBody()) {
		t.Errorf("Reserve() replay = %v, %v; want COMPLETED with the stored result", again.GetOutcome(), err)
	}
	if _, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Tenant: tenant, Namespace: ns, Key: kb, Token: tokB, Retention: dur(l.MinRetention)}); err != nil {
		t.Errorf("Complete(retention %v) error = %v", l.MinRetention, err)
	}
	kc := key("c")
	tokC := reserve(kc, nil).GetRecord().GetToken()
	if _, err := e.idem.Release(ctx, &idemv1.ReleaseRequest{Tenant: tenant, Namespace: ns, Key: kc, Token: tokC}); err != nil {
		t.Errorf("Release() at the limits error = %v", err)
	}
	kd := key("d")
	reserve(kd, nil)
	if _, err := e.admin.ForceRelease(ctx, &idemv1.ForceReleaseRequest{Tenant: tenant, Namespace: ns, Key: kd}); err != nil {
		t.Errorf("ForceRelease() at the limits error = %v", err)
	}
	if _, err := e.admin.DeleteKey(ctx, &idemv1.DeleteKeyRequest{Tenant: tenant, Namespace: ns, Key: kd}); err != nil {
		t.Errorf("DeleteKey() at the limits error = %v", err)
	}
	if resp, err := e.admin.ListKeys(ctx, &idemv1.ListKeysRequest{Tenant: tenant, Namespace: ns, KeyPrefix: ka, PageSize: maxPageSize}); err != nil ||
		len(resp.GetRecords()) != 1 || resp.GetRecords()[0].GetKey() != ka {
		t.Errorf("ListKeys(prefix at the key limit) = %v, %v; want the one record", resp, err)
	}
	if _, err := e.admin.ListKeys(ctx, &idemv1.ListKeysRequest{Tenant: tenant, Namespace: ns, PageToken: encodePageToken(ka)}); err != nil {
		t.Errorf("ListKeys(page token after a key at the limit) error = %v", err)
	}
	if _, err := e.admin.Stats(ctx, &idemv1.StatsRequest{Tenant: tenant, Namespace: ns}); err != nil {
		t.Errorf("Stats() at the limits error = %v", err)
	}

	// Batches of exactly MaxBatch items, each key and fingerprint at its
	// limit, one result at its limit.
	items := make([]*idemv1.BatchReserveRequest_Item, l.MaxBatch)
	for i := range items {
		items[i] = &idemv1.BatchReserveRequest_Item{Key: key(fmt.Sprintf("B%d-", i)), Fingerprint: fp}
	}
	// Their own namespace, also at its limit, keeps the snapshots below small.
	bns := textOf("/m", l.MaxNamespaceBytes)
	br, err := e.idem.BatchReserve(ctx, &idemv1.BatchReserveRequest{Tenant: tenant, Namespace: bns, LeaseTtl: dur(l.MaxLease), Retention: dur(l.MaxRetention), Items: items})
	if err != nil || len(br.GetResults()) != l.MaxBatch {
		t.Fatalf("BatchReserve(%d items) = %d results, %v", l.MaxBatch, len(br.GetResults()), err)
	}
	citems := make([]*idemv1.BatchCompleteRequest_Item, l.MaxBatch)
	for i, r := range br.GetResults() {
		if r.GetError() != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED || r.GetRecord().GetKey() != items[i].Key {
			t.Fatalf("BatchReserve results[%d] = %v, want %q RESERVED", i, r, items[i].Key)
		}
		citems[i] = &idemv1.BatchCompleteRequest_Item{Key: items[i].Key, Token: r.GetRecord().GetToken()}
	}
	citems[0].Result = result(l.MaxResultBytes)
	bc, err := e.idem.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Tenant: tenant, Namespace: bns, Retention: dur(l.MaxRetention), Items: citems})
	if err != nil || len(bc.GetResults()) != l.MaxBatch {
		t.Fatalf("BatchComplete(%d items) = %d results, %v", l.MaxBatch, len(bc.GetResults()), err)
	}
	for i, r := range bc.GetResults() {
		if r.GetError() != nil {
			t.Fatalf("BatchComplete results[%d] error = %v", i, r.GetError())
		}
	}

	// (b, c) One past each limit, on every entry point that takes it; the
	// calls aim at held records, so a wrongly accepted one shows.
	kh := key("h")
	tokH := reserve(kh, nil).GetRecord().GetToken()
	kh2 := key("i")
	tokH2 := reserve(kh2, nil).GetRecord().GetToken()
	overTenant := textOf("t", l.MaxTenantBytes+1)
	overNS := textOf("/n", l.MaxNamespaceBytes+1)
	overKey := key("h") + "x"
	overFP := bytes.Repeat([]byte{0xfe}, l.MaxFingerprintBytes+1)
	overPhase := phase + "x"
	overData := append(bytes.Clone(data), 0)
	overResult := result(l.MaxResultBytes)
	overResult.Body = append(overResult.Body, 'x')
	call := func(f func(context.Context) error) func(context.Context) error { return f }

	type ids struct{ tenant, ns, key string }
	// each entry point that names one record, called with id
	keyed := map[string]func(ctx context.Context, id ids) error{
		"Reserve": func(ctx context.Context, id ids) error {
			_, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Tenant: id.tenant, Namespace: id.ns, Key: id.key, Fingerprint: fp})
			return err
		},
		"Complete": func(ctx context.Context, id ids) error {
			_, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Tenant: id.tenant, Namespace: id.ns, Key: id.key, Token: tokH})
			return err
		},
		"Release": func(ctx context.Context, id ids) error {
			_, err := e.idem.Release(ctx, &idemv1.ReleaseRequest{Tenant: id.tenant, Namespace: id.ns, Key: id.key, Token: tokH})
			return err
		},
		"ExtendLease": func(ctx context.Context, id ids) error {
			_, err := e.idem.ExtendLease(ctx, &idemv1.ExtendLeaseRequest{Tenant: id.tenant, Namespace: id.ns, Key: id.key, Token: tokH, LeaseTtl: dur(l.MaxLease)})
			return err
		},
		"Checkpoint": func(ctx context.Context, id ids) error {
			_, err := e.idem.Checkpoint(ctx, &idemv1.CheckpointRequest{Tenant: id.tenant, Namespace: id.ns, Key: id.key, Token: tokH, Phase: "p"})
			return err
		},
		"Lookup": func(ctx context.Context, id ids) error {
			_, err := e.idem.Lookup(ctx, &idemv1.LookupRequest{Tenant: id.tenant, Namespace: id.ns, Key: id.key})
			return err
		},
		"DeleteKey": func(ctx context.Context, id ids) error {
			_, err := e.admin.DeleteKey(ctx, &idemv1.DeleteKeyRequest{Tenant: id.tenant, Namespace: id.ns, Key: id.key})
			return err
		},
		"ForceRelease": func(ctx context.Context, id ids) error {
			_, err := e.admin.ForceRelease(ctx, &idemv1.ForceReleaseRequest{Tenant: id.tenant, Namespace: id.ns, Key: id.key})
			return err
		},
		"BatchReserve": func(ctx context.Context, id ids) error {
			_, err := e.idem.BatchReserve(ctx, &idemv1.BatchReserveRequest{Tenant: id.tenant, Namespace: id.ns, Items: []*idemv1.BatchReserveRequest_Item{{Key: key("n")}}})
			return err
		},
		"BatchComplete": func(ctx context.Context, id ids) error {
			_, err := e.idem.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Tenant: id.tenant, Namespace: id.ns, Items: []*idemv1.BatchCompleteRequest_Item{{Key: kh, Token: tokH}}})
			return err
		},
		"ListKeys": func(ctx context.Context, id ids) error {
			_, err := e.admin.ListKeys(ctx, &idemv1.ListKeysRequest{Tenant: id.tenant, Namespace: id.ns})
			return err
		},
		"Stats": func(ctx context.Context, id ids) error {
			_, err := e.admin.Stats(ctx, &idemv1.StatsRequest{Tenant: id.tenant, Namespace: id.ns})
			return err
		},
	}
	var cases []limitCase
	for _, name := range []string{"Reserve", "Complete", "Release", "ExtendLease", "Checkpoint", "Lookup", "DeleteKey", "ForceRelease", "BatchReserve", "BatchComplete", "ListKeys", "Stats"} {
		f := keyed[name]
		cases = append(cases,
			limitCase{name + " tenant 1 byte over", func(ctx context.Context) error { return f(ctx, ids{overTenant, ns, kh}) }, []string{"tenant"}},
			limitCase{name + " namespace 1 byte over", func(ctx context.Context) error { return f(ctx, ids{tenant, overNS, kh}) }, []string{"namespace"}},
		)
		switch name {
		case "BatchReserve", "BatchComplete", "ListKeys", "Stats":
		default:
			cases = append(cases, limitCase{name + " key 1 byte over", func(ctx context.Context) error { return f(ctx, ids{tenant, ns, overKey}) }, []string{"key"}})
		}
	}
	cases = append(cases,
		limitCase{"Reserve fingerprint 1 byte over", call(func(ctx context.Context) error {
			_, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Tenant: tenant, Namespace: ns, Key: kh, Fingerprint: overFP})
			return err
		}), []string{"fingerprint"}},
		limitCase{"Reserve lease 1ns under min", call(func(ctx context.Context) error {
			_, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Tenant: tenant, Namespace: ns, Key: key("r1"), LeaseTtl: dur(l.MinLease - 1)})
			return err
		}), []string{"lease_ttl"}},
		limitCase{"Reserve lease 1ns over max", call(func(ctx context.Context) error {
			_, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Tenant: tenant, Namespace: ns, Key: key("r2"), LeaseTtl: dur(l.MaxLease + 1)})
			return err
		}), []string{"lease_ttl"}},
		limitCase{"Reserve retention 1ns under min", call(func(ctx context.Context) error {
			_, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Tenant: tenant, Namespace: ns, Key: key("r3"), Retention: dur(l.MinRetention - 1)})
			return err
		}), []string{"retention"}},
		limitCase{"Reserve retention 1ns over max", call(func(ctx context.Context) error {
			_, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Tenant: tenant, Namespace: ns, Key: key("r4"), Retention: dur(l.MaxRetention + 1)})
			return err
		}), []string{"retention"}},
		limitCase{"Reserve wait 1ns over max", call(func(ctx context.Context) error {
			_, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Tenant: tenant, Namespace: ns, Key: key("r5"), Wait: dur(l.MaxWait + 1)})
			return err
		}), []string{"wait"}},
		limitCase{"Complete result 1 byte over", call(func(ctx context.Context) error {
			_, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Tenant: tenant, Namespace: ns, Key: kh, Token: tokH, Result: overResult})
			return err
		}), []string{"result"}},
		limitCase{"Complete retention 1ns under min", call(func(ctx context.Context) error {
			_, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Tenant: tenant, Namespace: ns, Key: kh, Token: tokH, Retention: dur(l.MinRetention - 1)})
			return err
		}), []string{"retention"}},
		limitCase{"Complete retention 1ns over max", call(func(ctx context.Context) error {
			_, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Tenant: tenant, Namespace: ns, Key: kh, Token: tokH, Retention: dur(l.MaxRetention + 1)})
			return err
		}), []string{"retention"}},
		limitCase{"ExtendLease 1ns under min", call(func(ctx context.Context) error {
			_, err := e.idem.ExtendLease(ctx, &idemv1.ExtendLeaseRequest{Tenant: tenant, Namespace: ns, Key: kh, Token: tokH, LeaseTtl: dur(l.MinLease - 1)})
			return err
		}), []string{"lease_ttl"}},
		limitCase{"ExtendLease 1ns over max", call(func(ctx context.Context) error {
			_, err := e.idem.ExtendLease(ctx, &idemv1.ExtendLeaseRequest{Tenant: tenant, Namespace: ns, Key: kh, Token: tokH, LeaseTtl: dur(l.MaxLease + 1)})
			return err
		}), []string{"lease_ttl"}},
		limitCase{"Checkpoint phase 1 byte over", call(func(ctx context.Context) error {
			_, err := e.idem.Checkpoint(ctx, &idemv1.CheckpointRequest{Tenant: tenant, Namespace: ns, Key: kh, Token: tokH, Phase: overPhase})
			return err
		}), []string{"phase"}},
		limitCase{"Checkpoint data 1 byte over", call(func(ctx context.Context) error {
			_, err := e.idem.Checkpoint(ctx, &idemv1.CheckpointRequest{Tenant: tenant, Namespace: ns, Key: kh, Token: tokH, Data: overData})
			return err
		}), []string{"data"}},
		limitCase{"BatchReserve 1 item over", call(func(ctx context.Context) error {
			over := make([]*idemv1.BatchReserveRequest_Item, l.MaxBatch+1)
			for i := range over {
				over[i] = &idemv1.BatchReserveRequest_Item{Key: key(fmt.Sprintf("O%d-", i))}
			}
			_, err := e.idem.BatchReserve(ctx, &idemv1.BatchReserveRequest{Tenant: tenant, Namespace: ns, Items: over})
			return err
		}), []string{"items"}},
		limitCase{"BatchReserve lease 1ns under min and retention 1ns over max", call(func(ctx context.Context) error {
			_, err := e.idem.BatchReserve(ctx, &idemv1.BatchReserveRequest{Tenant: tenant, Namespace: ns, LeaseTtl: dur(l.MinLease - 1), Retention: dur(l.MaxRetention + 1),
				Items: []*idemv1.BatchReserveRequest_Item{{Key: key("n")}}})
			return err
		}), []string{"lease_ttl", "retention"}},
		limitCase{"BatchComplete 1 item over", call(func(ctx context.Context) error {
			over := make([]*idemv1.BatchCompleteRequest_Item, l.MaxBatch+1)
			for i := range over {
				over[i] = &idemv1.BatchCompleteRequest_Item{Key: key(fmt.Sprintf("O%d-", i)), Token: 1}
			}
			over[0] = &idemv1.BatchCompleteRequest_Item{Key: kh, Token: tokH}
			_, err := e.idem.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Tenant: tenant, Namespace: ns, Items: over})
			return err
		}), []string{"items"}},
		limitCase{"BatchComplete retention 1ns under min", call(func(ctx context.Context) error {
			_, err := e.idem.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Tenant: tenant, Namespace: ns, Retention: dur(l.MinRetention - 1),
				Items: []*idemv1.BatchCompleteRequest_Item{{Key: kh, Token: tokH}}})
			return err
		}), []string{"retention"}},
		limitCase{"ListKeys key prefix 1 byte over", call(func(ctx context.Context) error {
			_, err := e.admin.ListKeys(ctx, &idemv1.ListKeysRequest{Tenant: tenant, Namespace: ns, KeyPrefix: overKey})
			return err
		}), []string{"key_prefix"}},
		limitCase{"ListKeys page token holding a key 1 byte over", call(func(ctx context.Context) error {
			_, err := e.admin.ListKeys(ctx, &idemv1.ListKeysRequest{Tenant: tenant, Namespace: ns, PageToken: encodePageToken(overKey)})
			return err
		}), []string{"page_token"}},
		limitCase{"ListKeys page size 1 over", call(func(ctx context.Context) error {
			_, err := e.admin.ListKeys(ctx, &idemv1.ListKeysRequest{Tenant: tenant, Namespace: ns, PageSize: maxPageSize + 1})
			return err
		}), []string{"page_size"}},
	)
	watch := [][2]string{{tenant, ns}, {overTenant, ns}, {tenant, overNS}}
	runLimitCases(t, e, watch, cases)

	// Batch items one past their limits fail alone; the good item beside
	// them proceeds. A context of its own: the cases above had theirs.
	ctx = testContext(t)
	before := e.snapshot(ctx, t, tenant, ns)
	rr, err := e.idem.BatchReserve(ctx, &idemv1.BatchReserveRequest{Tenant: tenant, Namespace: ns, Items: []*idemv1.BatchReserveRequest_Item{
		{Key: key("g"), Fingerprint: fp},
		{Key: overKey},
		{Key: key("f"), Fingerprint: overFP},
	}})
	if err != nil {
		t.Fatalf("BatchReserve(items over) error = %v", err)
	}
	if r := rr.GetResults()[0]; r.GetError() != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
		t.Errorf("BatchReserve results[0] = %v, want RESERVED", r)
	}
	wantItemInvalid(t, 1, rr.GetResults()[1].GetError(), "items[1].key")
	wantItemInvalid(t, 2, rr.GetResults()[2].GetError(), "items[2].fingerprint")
	cr, err := e.idem.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Tenant: tenant, Namespace: ns, Items: []*idemv1.BatchCompleteRequest_Item{
		{Key: kh2, Token: tokH2, Result: result(l.MaxResultBytes)},
		{Key: kh, Token: tokH, Result: overResult},
		{Key: overKey, Token: 1},
	}})
	if err != nil {
		t.Fatalf("BatchComplete(items over) error = %v", err)
	}
	if r := cr.GetResults()[0]; r.GetError() != nil || r.GetRecord().GetState() != idemv1.RecordState_RECORD_STATE_COMPLETED {
		t.Errorf("BatchComplete results[0] = %v, want COMPLETED", r)
	}
	wantItemInvalid(t, 1, cr.GetResults()[1].GetError(), "items[1].result")
	wantItemInvalid(t, 2, cr.GetResults()[2].GetError(), "items[2].key")
	after := e.snapshot(ctx, t, tenant, ns)
	changed := map[string]bool{}
	old := map[string]*storage.Record{}
	for _, r := range before {
		old[r.Key] = r
	}
	for _, r := range after {
		if o, ok := old[r.Key]; !ok || !reflect.DeepEqual(o, r) {
			changed[r.Key] = true
		}
	}
	if len(changed) != 2 || !changed[key("g")] || !changed[kh2] || len(after) != len(before)+1 {
		t.Errorf("records changed %d (had %d, have %d), want only the two good items", len(changed), len(before), len(after))
	}
	rec, err := e.store.Lookup(ctx, storage.ID{Tenant: tenant, Namespace: ns, Key: kh})
	if err != nil || rec.State != storage.StateInProgress || rec.Token != tokH || rec.Result != nil || rec.Checkpoint != nil {
		t.Errorf("held record = %+v, %v; want IN_PROGRESS, token %d, untouched", rec, err, tokH)
	}
}

// TestDurationBeyondGoRangeIsNamedAsSent: a duration past time.Duration's
// ±292 years (valid in google.protobuf.Duration up to ±10,000 years) is
// refused naming the field and the value the caller sent, not the
// saturated 2562047h47m16.854775807s it converts to.
func TestDurationBeyondGoRangeIsNamedAsSent(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name string
		d    *durationpb.Duration
		want []string
	}{
		{"10,000 years", &durationpb.Duration{Seconds: 315576000000},
			[]string{"lease_ttl is 315576000000s, more than the maximum 1h0m0s", "retention is 315576000000s, more than the maximum 720h0m0s", "wait is 315576000000s, more than the maximum 30s"}},
		{"just past time.Duration", &durationpb.Duration{Seconds: 9223372037, Nanos: 5},
			[]string{"lease_ttl is 9223372037.000000005s, more than the maximum 1h0m0s"}},
		{"-10,000 years", &durationpb.Duration{Seconds: -315576000000, Nanos: -1},
			[]string{"lease_ttl is negative (-315576000000.000000001s)", "wait is negative (-315576000000.000000001s)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			before := e.snapshot(ctx, t, DefaultTenant, testNS)
			_, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "k", LeaseTtl: tc.d, Retention: tc.d, Wait: tc.d})
			wantInvalid(t, err, "lease_ttl", "retention", "wait")
			for _, w := range tc.want {
				if msg := status.Convert(err).Message(); !strings.Contains(msg, w) {
					t.Errorf("message = %q, want it to say %q", msg, w)
				}
			}
			assertUnchanged(t, before, e.snapshot(ctx, t, DefaultTenant, testNS))
		})
	}
}

// TestPageTokenOverALoweredKeyLimitSaysWhy: records keep the keys they were
// stored with when an operator lowers the key limit, so ListKeys can hand
// out a token after such a key. Refusing it back is the limit at work, but
// the error must say which limit, not call idemd's own token forged.
func TestPageTokenOverALoweredKeyLimitSaysWhy(t *testing.T) {
	e := newEnv(t, WithLimits(Limits{MaxKeyBytes: 512}))
	ctx := testContext(t)
	for _, k := range []string{"a" + strings.Repeat("é", 150), "b"} {
		if _, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: k}); err != nil {
			t.Fatal(err)
		}
	}
	lowered, err := New(e.store, WithLimits(DefaultLimits()), WithClock(e.clock), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer lowered.Close()
	first, err := lowered.ListKeys(ctx, &idemv1.ListKeysRequest{Namespace: testNS, PageSize: 1})
	if err != nil || len(first.GetRecords()) != 1 || first.GetNextPageToken() == "" {
		t.Fatalf("ListKeys(page 1) = %v, %v; want one record and a token", first, err)
	}
	before := e.snapshot(ctx, t, DefaultTenant, testNS)
	_, err = lowered.ListKeys(ctx, &idemv1.ListKeysRequest{Namespace: testNS, PageToken: first.GetNextPageToken()})
	wantInvalid(t, err, "page_token")
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "301 bytes, more than 256") {
		t.Errorf("message = %q, want it to say the token's key is 301 bytes, more than 256", msg)
	}
	// A token that is no token at all still says so.
	_, err = lowered.ListKeys(ctx, &idemv1.ListKeysRequest{Namespace: testNS, PageToken: "not a token"})
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "page_token is not a token from a previous ListKeys response") {
		t.Errorf("message = %q, want it to say the token is none of ListKeys'", msg)
	}
	assertUnchanged(t, before, e.snapshot(ctx, t, DefaultTenant, testNS))
}
