package client_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/idemhq/idem/client"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// TestAudit12CacheDoesNotAnswerWhatIdemRefuses: DESIGN.md §4 — a request
// field outside its limits is INVALID_ARGUMENT naming the field. With
// WithCache, a Reserve of a completed key whose lease_ttl, retention or
// wait no idem accepts (negative, or not a valid Duration) must be refused
// as it is without the cache, not answered COMPLETED from memory.
func TestAudit12CacheDoesNotAnswerWhatIdemRefuses(t *testing.T) {
	ctx := testCtx(t)
	ie := startIdem(t, idemConfig{remote: true, clientOpts: []client.Option{client.WithCache(8)}})
	c := ie.client
	base := func() *idemv1.ReserveRequest {
		return &idemv1.ReserveRequest{Namespace: "ns", Key: "k", Fingerprint: []byte("f")}
	}
	r, err := c.Reserve(ctx, base())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Complete(ctx, &idemv1.CompleteRequest{Namespace: "ns", Key: "k", Token: r.GetRecord().GetToken(), Result: &idemv1.Result{Body: []byte("ok")}}); err != nil {
		t.Fatal(err)
	}
	// The cache answers a good repeat (the point of it).
	before := ie.reserves.Load()
	if r, err := c.Reserve(ctx, base()); err != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED {
		t.Fatalf("Reserve() repeat = %v, %v; want COMPLETED", r, err)
	}
	if got := ie.reserves.Load(); got != before {
		t.Fatalf("a good repeat reached idemd (%d Reserves), want it answered from the cache", got-before)
	}

	neg := durationpb.New(-time.Second)
	bad := &durationpb.Duration{Seconds: 1, Nanos: -5} // mixed signs: not a valid Duration
	for _, tc := range []struct {
		name, field string
		mod         func(*idemv1.ReserveRequest)
	}{
		{"negative lease", "lease_ttl", func(r *idemv1.ReserveRequest) { r.LeaseTtl = neg }},
		{"negative retention", "retention", func(r *idemv1.ReserveRequest) { r.Retention = neg }},
		{"negative wait", "wait", func(r *idemv1.ReserveRequest) { r.Wait = neg }},
		{"malformed lease", "lease_ttl", func(r *idemv1.ReserveRequest) { r.LeaseTtl = bad }},
		{"malformed retention", "retention", func(r *idemv1.ReserveRequest) { r.Retention = bad }},
		{"malformed wait", "wait", func(r *idemv1.ReserveRequest) { r.Wait = bad }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := base()
			tc.mod(req)
			resp, err := c.Reserve(ctx, req)
			if err == nil {
				t.Fatalf("Reserve(%s) = %v, nil; want INVALID_ARGUMENT naming %s, as without the cache", tc.name, resp.GetOutcome(), tc.field)
			}
			wantRefused(t, "Reserve("+tc.name+")", err, tc.field)
		})
	}
	// The refusals dropped nothing: a good repeat is still a cache hit.
	before = ie.reserves.Load()
	if r, err := c.Reserve(ctx, base()); err != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED {
		t.Fatalf("Reserve() repeat after the refusals = %v, %v; want COMPLETED", r, err)
	}
	if got := ie.reserves.Load(); got != before {
		t.Errorf("a good repeat after the refusals reached idemd, want the cache to answer it")
	}
}
