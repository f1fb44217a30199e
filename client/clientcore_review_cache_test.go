package client_test

import (
	"context"
	"errors"
	"testing"

	"github.com/idemhq/idem/client"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// The cache holds a completed record an operator then deletes. Reserve
// answers seen afterwards drop the stale answer (see
// TestReviewCacheDropsAnswerItSawReplaced); so must the other answers the
// client sees for the key: a BatchReserve that reserved it for another
// command, or a Lookup that found it gone. Otherwise the client keeps
// replaying the deleted result as COMPLETED until its expires_at (24 h by
// default), where idemd would answer MISMATCH or RESERVED.
func TestReviewCacheDropsAnswerOtherCallsSawReplaced(t *testing.T) {
	for _, tc := range []struct {
		name string
		see  func(ctx context.Context, t *testing.T, c *client.Client)
		// want is the outcome of a Reserve with the deleted record's
		// fingerprint afterwards.
		want idemv1.ReserveOutcome
	}{
		{"BatchReserve RESERVED for another fingerprint", func(ctx context.Context, t *testing.T, c *client.Client) {
			resp, err := c.BatchReserve(ctx, &idemv1.BatchReserveRequest{Namespace: "ns",
				Items: []*idemv1.BatchReserveRequest_Item{{Key: "k", Fingerprint: []byte("g")}}})
			if err != nil || resp.GetResults()[0].GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
				t.Fatalf("BatchReserve(g) after the delete = %v, %v; want RESERVED", resp, err)
			}
		}, idemv1.ReserveOutcome_RESERVE_OUTCOME_MISMATCH},
		{"Lookup NOT_FOUND", func(ctx context.Context, t *testing.T, c *client.Client) {
			if _, err := c.Lookup(ctx, &idemv1.LookupRequest{Namespace: "ns", Key: "k"}); !errors.Is(err, client.ErrNotFound) {
				t.Fatalf("Lookup() after the delete = %v, want ErrNotFound", err)
			}
		}, idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			ie := startIdem(t, idemConfig{remote: true, clientOpts: []client.Option{client.WithCache(8)}})
			c := ie.client
			r, err := c.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k", Fingerprint: []byte("f")})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Complete(ctx, &idemv1.CompleteRequest{Namespace: "ns", Key: "k", Token: r.GetRecord().GetToken(), Result: &idemv1.Result{Body: []byte("old")}}); err != nil {
				t.Fatal(err)
			}
			if _, err := idemv1.NewAdminServiceClient(c.Conn()).DeleteKey(ctx, &idemv1.DeleteKeyRequest{Namespace: "ns", Key: "k"}); err != nil {
				t.Fatal(err)
			}
			tc.see(ctx, t, c)
			r, err = c.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k", Fingerprint: []byte("f")})
			if err != nil {
				t.Fatal(err)
			}
			if got := r.GetOutcome(); got != tc.want {
				t.Errorf("Reserve() with the deleted record's fingerprint = %v %q, want %v", got, r.GetRecord().GetResult().GetBody(), tc.want)
			}
		})
	}
}

// A BatchReserve item answered COMPLETED is as immutable as a Reserve
// answered COMPLETED, and both go into the cache the same way: a later
// Reserve of it is answered byte for byte as idemd answered.
func TestReviewCacheKeepsBatchReserveCompleted(t *testing.T) {
	ctx := testCtx(t)
	ie := startIdem(t, idemConfig{remote: true, clientOpts: []client.Option{client.WithCache(8)}})
	c := ie.client
	r, err := c.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k", Fingerprint: []byte("f")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Complete(ctx, &idemv1.CompleteRequest{Namespace: "ns", Key: "k", Token: r.GetRecord().GetToken(), Result: &idemv1.Result{Body: []byte("b")}}); err != nil {
		t.Fatal(err)
	}
	for _, fp := range []string{"f", "x"} {
		resp, err := c.BatchReserve(ctx, &idemv1.BatchReserveRequest{Namespace: "ns",
			Items: []*idemv1.BatchReserveRequest_Item{{Key: "k", Fingerprint: []byte(fp)}}})
		if err != nil {
			t.Fatal(err)
		}
		want := idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED
		if fp == "x" {
			want = idemv1.ReserveOutcome_RESERVE_OUTCOME_MISMATCH
		}
		if got := resp.GetResults()[0].GetOutcome(); got != want {
			t.Fatalf("BatchReserve(%s) = %v, want %v", fp, got, want)
		}
	}
	// The MISMATCH names the same completed record: the answer stays.
	r2, err := c.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k", Fingerprint: []byte("f")})
	if err != nil || r2.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED || string(r2.GetRecord().GetResult().GetBody()) != "b" {
		t.Errorf("Reserve() = %v, %v; want COMPLETED with body b", r2, err)
	}
}
