package client_test

import (
	"bytes"
	"testing"

	"github.com/idemhq/idem/client"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// The client sees a cached record replaced (an operator deleted it, and
// another command reserved the key): a Reserve answered RESERVED for the key
// must drop the old answer rather than keep replaying it for the old
// fingerprint.
func TestReviewCacheDropsAnswerItSawReplaced(t *testing.T) {
	ctx := testCtx(t)
	ie := startIdem(t, idemConfig{remote: true, clientOpts: []client.Option{client.WithCache(8)}})
	c := ie.client
	reserve := func(fp string) *idemv1.ReserveResponse {
		t.Helper()
		r, err := c.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k", Fingerprint: []byte(fp)})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := reserve("f")
	if _, err := c.Complete(ctx, &idemv1.CompleteRequest{Namespace: "ns", Key: "k", Token: r.GetRecord().GetToken(), Result: &idemv1.Result{Body: []byte("old")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := idemv1.NewAdminServiceClient(c.Conn()).DeleteKey(ctx, &idemv1.DeleteKeyRequest{Namespace: "ns", Key: "k"}); err != nil {
		t.Fatal(err)
	}
	if got := reserve("g").GetOutcome(); got != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
		t.Fatalf("Reserve(g) after the delete = %v, want RESERVED", got)
	}
	if r := reserve("f"); r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_MISMATCH {
		t.Errorf("Reserve() with the old fingerprint = %v %.8q, want MISMATCH (the key is g's now)", r.GetOutcome(), r.GetRecord().GetResult().GetBody())
	}
}

// As above, but the client sees only the new record's Complete (another
// process reserved the key): an answer too large to cache must still
// displace the old one.
func TestReviewCacheOversizeCompleteDisplacesOldAnswer(t *testing.T) {
	ctx := testCtx(t)
	ie := startIdem(t, idemConfig{remote: true, clientOpts: []client.Option{client.WithCache(8), client.WithCacheBytes(4 << 10)}})
	c, other := ie.client, client.Local(ie.server)
	complete := func(fp string, body []byte, via client.Service) {
		t.Helper()
		r, err := via.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k", Fingerprint: []byte(fp)})
		if err != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
			t.Fatalf("Reserve() = %v, %v; want RESERVED", r, err)
		}
		if _, err := c.Complete(ctx, &idemv1.CompleteRequest{Namespace: "ns", Key: "k", Token: r.GetRecord().GetToken(), Result: &idemv1.Result{Body: body}}); err != nil {
			t.Fatal(err)
		}
	}
	complete("f", []byte("old"), c)
	if _, err := idemv1.NewAdminServiceClient(c.Conn()).DeleteKey(ctx, &idemv1.DeleteKeyRequest{Namespace: "ns", Key: "k"}); err != nil {
		t.Fatal(err)
	}
	complete("g", bytes.Repeat([]byte("n"), 8<<10), other)
	r, err := c.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k", Fingerprint: []byte("f")})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.GetOutcome(); got != idemv1.ReserveOutcome_RESERVE_OUTCOME_MISMATCH {
		t.Errorf("Reserve() with the old fingerprint = %v %.8q, want MISMATCH (the record is g's now)", got, r.GetRecord().GetResult().GetBody())
	}
}
