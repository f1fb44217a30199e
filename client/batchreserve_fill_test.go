package client_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/idemhq/idem/client"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// idemd answers RESOURCE_EXHAUSTED for the records past a BatchReserve
// answer's budget; the client asks for them one by one, with the batch's
// lease and retention, so its caller gets every record.
func TestBatchReserveFillsItemsPastTheBudget(t *testing.T) {
	ctx := testCtx(t)
	var mu sync.Mutex
	var asked []*idemv1.ReserveRequest
	capture := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if r, ok := req.(*idemv1.ReserveRequest); ok {
			mu.Lock()
			asked = append(asked, r)
			mu.Unlock()
		}
		return h(ctx, req)
	}
	ie := startIdem(t, idemConfig{remote: true, serverExtra: []grpc.UnaryServerInterceptor{capture}})
	big, items := completeBig(ctx, t, ie, 6)
	items = append(items, &idemv1.BatchReserveRequest_Item{Key: "fresh", Fingerprint: []byte("fp")})
	// Its server-side answer leaves two records out.
	direct, err := ie.server.BatchReserve(ctx, &idemv1.BatchReserveRequest{Tenant: "default", Namespace: "ns", Items: items[:6]})
	if err != nil {
		t.Fatal(err)
	}
	left := 0
	for _, r := range direct.GetResults() {
		if r.GetError() != nil {
			left++
		}
	}
	if left != 2 {
		t.Fatalf("server left %d items out, want 2 (the test's sizes no longer cross the budget)", left)
	}

	mu.Lock()
	asked = nil
	mu.Unlock()
	lease, retention := durationpb.New(7*time.Second), durationpb.New(time.Hour)
	resp, err := ie.client.BatchReserve(ctx, &idemv1.BatchReserveRequest{Namespace: "ns", Items: items, LeaseTtl: lease, Retention: retention})
	if err != nil {
		t.Fatalf("BatchReserve() error = %v", err)
	}
	for i, r := range resp.GetResults()[:6] {
		if r.GetError() != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED || !bytes.Equal(r.GetRecord().GetResult().GetBody(), big) {
			t.Errorf("big-%d: %v %v, want COMPLETED with its whole result", i, r.GetOutcome(), r.GetError())
		}
	}
	if fresh := resp.GetResults()[6]; fresh.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
		t.Errorf("fresh: %v %v, want RESERVED", fresh.GetOutcome(), fresh.GetError())
	}
	mu.Lock()
	defer mu.Unlock()
	var keys []string
	for _, r := range asked {
		keys = append(keys, r.GetKey())
		want := &idemv1.ReserveRequest{Tenant: "", Namespace: "ns", Key: r.GetKey(), Fingerprint: []byte("fp"), LeaseTtl: lease, Retention: retention}
		if !proto.Equal(r, want) {
			t.Errorf("Reserve asked %v, want %v", r, want)
		}
	}
	if !slices.Equal(keys, []string{"big-4", "big-5"}) {
		t.Errorf("client asked again for %q, want the two items left out", keys)
	}
}

// client.Local fills in the items past the budget too.
func TestLocalBatchReserveFillsItemsPastTheBudget(t *testing.T) {
	ctx := testCtx(t)
	ie := startIdem(t, idemConfig{})
	big, items := completeBig(ctx, t, ie, 6)
	resp, err := client.Local(ie.server).BatchReserve(ctx, &idemv1.BatchReserveRequest{Namespace: "ns", Items: items})
	if err != nil {
		t.Fatalf("BatchReserve() error = %v", err)
	}
	for i, r := range resp.GetResults() {
		if r.GetError() != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED || !bytes.Equal(r.GetRecord().GetResult().GetBody(), big) {
			t.Errorf("big-%d: %v %v, want COMPLETED with its whole result", i, r.GetOutcome(), r.GetError())
		}
	}
}

// completeBig completes n keys big-0… with results of 1000 KiB, so that
// six of them pass a BatchReserve answer's 4 MiB bound, and returns the
// result and the batch items that ask for them.
func completeBig(ctx context.Context, t *testing.T, ie *idemEnv, n int) ([]byte, []*idemv1.BatchReserveRequest_Item) {
	t.Helper()
	big := bytes.Repeat([]byte{'r'}, 1000<<10)
	var items []*idemv1.BatchReserveRequest_Item
	for i := range n {
		key := fmt.Sprint("big-", i)
		r, err := ie.svc.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: key, Fingerprint: []byte("fp")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ie.svc.Complete(ctx, &idemv1.CompleteRequest{Namespace: "ns", Key: key, Token: r.GetRecord().GetToken(), Result: &idemv1.Result{Body: big}}); err != nil {
			t.Fatal(err)
		}
		items = append(items, &idemv1.BatchReserveRequest_Item{Key: key, Fingerprint: []byte("fp")})
	}
	return big, items
}
