package idemd

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

func fieldsOf(err error) []string {
	var f []string
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				f = append(f, v.GetField())
			}
		}
	}
	return f
}

// TestFlagLimitsReachEveryEntryPoint: the limits idemd's flags raise or
// lower, and a --namespace-policy that narrows them, are what every
// data-plane call enforces over idemd's own gRPC server (its receive size
// included): at the limit accepted, one past refused naming the field.
func TestFlagLimitsReachEveryEntryPoint(t *testing.T) {
	const big = 3 << 20
	cfg, err := parse(t, []string{
		"--listen", "127.0.0.1:0", "--store", "memory://",
		"--max-lease", "2h", "--default-lease", "10s", "--max-retention", "1000h", "--max-result-bytes", "3145728",
		"--namespace-policy", "small=max-lease=5s,max-retention=10s,max-result-bytes=16",
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &addrHandler{addr: make(chan string, 1)}
	errc := make(chan error, 1)
	go func() { errc <- Serve(ctx, cfg, slog.New(g)) }()
	var addr string
	select {
	case addr = <-g.addr:
	case err := <-errc:
		cancel()
		t.Fatalf("Serve() = %v before serving", err)
	case <-time.After(defaultTestTimeout):
		cancel()
		t.Fatal("Serve() did not start")
	}
	t.Cleanup(func() { cancel(); <-errc })
	c := dial(t, addr)
	cctx, ccancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer ccancel()
	send := grpc.MaxCallSendMsgSize(64 << 20)
	recv := grpc.MaxCallRecvMsgSize(64 << 20)
	d := durationpb.New

	want := func(what string, err error, fields ...string) {
		t.Helper()
		if fields == nil {
			if err != nil {
				t.Errorf("%s error = %v, want success at the limit", what, err)
			}
			return
		}
		if status.Code(err) != codes.InvalidArgument || !slices.Equal(fieldsOf(err), fields) {
			t.Errorf("%s error = %v, want INVALID_ARGUMENT naming %q", what, err, fields)
		}
		for _, f := range fields {
			if !strings.Contains(status.Convert(err).Message(), f) {
				t.Errorf("%s message %q does not name %q", what, status.Convert(err).Message(), f)
			}
		}
	}
	for _, tc := range []struct {
		ns                  string
		maxLease, maxRet    time.Duration
		maxResult, defLease int
	}{
		{"wide", 2 * time.Hour, 1000 * time.Hour, big, 10},
		{"small", 5 * time.Second, 10 * time.Second, 16, 5},
	} {
		t.Run(tc.ns, func(t *testing.T) {
			r, err := c.Reserve(cctx, &idemv1.ReserveRequest{Namespace: tc.ns, Key: "k", LeaseTtl: d(tc.maxLease), Retention: d(tc.maxRet)})
			want("Reserve at max lease and retention", err)
			tok := r.GetRecord().GetToken()
			_, err = c.Reserve(cctx, &idemv1.ReserveRequest{Namespace: tc.ns, Key: "k2", LeaseTtl: d(tc.maxLease + 1)})
			want("Reserve lease over", err, "lease_ttl")
			_, err = c.Reserve(cctx, &idemv1.ReserveRequest{Namespace: tc.ns, Key: "k2", Retention: d(tc.maxRet + 1)})
			want("Reserve retention over", err, "retention")
			dr, err := c.Reserve(cctx, &idemv1.ReserveRequest{Namespace: tc.ns, Key: "dflt"})
			if got := dr.GetRecord().GetLeaseExpiresAt().AsTime().Sub(dr.GetRecord().GetCreatedAt().AsTime()); err != nil || got != time.Duration(tc.defLease)*time.Second {
				t.Errorf("default lease = %v, %v; want %ds", got, err, tc.defLease)
			}
			_, err = c.ExtendLease(cctx, &idemv1.ExtendLeaseRequest{Namespace: tc.ns, Key: "k", Token: tok, LeaseTtl: d(tc.maxLease + 1)})
			want("ExtendLease over", err, "lease_ttl")
			_, err = c.ExtendLease(cctx, &idemv1.ExtendLeaseRequest{Namespace: tc.ns, Key: "k", Token: tok, LeaseTtl: d(tc.maxLease)})
			want("ExtendLease at max", err)
			_, err = c.Checkpoint(cctx, &idemv1.CheckpointRequest{Namespace: tc.ns, Key: "k", Token: tok, Data: make([]byte, tc.maxResult+1)}, send)
			want("Checkpoint data over", err, "data")
			_, err = c.Checkpoint(cctx, &idemv1.CheckpointRequest{Namespace: tc.ns, Key: "k", Token: tok, Data: make([]byte, tc.maxResult)}, send, recv)
			want("Checkpoint data at max", err)
			_, err = c.Complete(cctx, &idemv1.CompleteRequest{Namespace: tc.ns, Key: "k", Token: tok, Result: &idemv1.Result{Body: make([]byte, tc.maxResult+1)}}, send)
			want("Complete result over", err, "result")
			_, err = c.Complete(cctx, &idemv1.CompleteRequest{Namespace: tc.ns, Key: "k", Token: tok, Retention: d(tc.maxRet + 1)})
			want("Complete retention over", err, "retention")
			br, err := c.BatchReserve(cctx, &idemv1.BatchReserveRequest{Namespace: tc.ns, LeaseTtl: d(tc.maxLease + 1), Items: []*idemv1.BatchReserveRequest_Item{{Key: "b"}}})
			want("BatchReserve lease over", err, "lease_ttl")
			br, err = c.BatchReserve(cctx, &idemv1.BatchReserveRequest{Namespace: tc.ns, LeaseTtl: d(tc.maxLease), Retention: d(tc.maxRet), Items: []*idemv1.BatchReserveRequest_Item{{Key: "b"}}})
			want("BatchReserve at max", err)
			bc, err := c.BatchComplete(cctx, &idemv1.BatchCompleteRequest{Namespace: tc.ns, Items: []*idemv1.BatchCompleteRequest_Item{
				{Key: "b", Token: br.GetResults()[0].GetRecord().GetToken(), Result: &idemv1.Result{Body: make([]byte, tc.maxResult+1)}},
			}}, send)
			if err != nil || !strings.Contains(bc.GetResults()[0].GetError().GetMessage(), "items[0].result") {
				t.Errorf("BatchComplete result over = %v, %v; want the item refused naming items[0].result", bc, err)
			}
			lk, err := c.Lookup(cctx, &idemv1.LookupRequest{Namespace: tc.ns, Key: "k"}, recv)
			if err != nil || lk.GetRecord().GetState() != idemv1.RecordState_RECORD_STATE_IN_PROGRESS || len(lk.GetRecord().GetCheckpoint().GetData()) != tc.maxResult {
				t.Fatalf("Lookup() = %v; want k still IN_PROGRESS with its checkpoint", err)
			}
			body := bytes.Repeat([]byte{0xee}, tc.maxResult)
			_, err = c.Complete(cctx, &idemv1.CompleteRequest{Namespace: tc.ns, Key: "k", Token: tok, Result: &idemv1.Result{Body: body}, Retention: d(tc.maxRet)}, send, recv)
			want("Complete at max result and retention", err)
			bc, err = c.BatchComplete(cctx, &idemv1.BatchCompleteRequest{Namespace: tc.ns, Retention: d(tc.maxRet), Items: []*idemv1.BatchCompleteRequest_Item{
				{Key: "b", Token: br.GetResults()[0].GetRecord().GetToken(), Result: &idemv1.Result{Body: body}},
			}}, send, recv)
			if err != nil || bc.GetResults()[0].GetError() != nil {
				t.Errorf("BatchComplete at max result = %v, %v", bc.GetResults(), err)
			}
		})
	}
}
