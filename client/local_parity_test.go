package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/idemhq/idem/client"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// describe renders an answer for comparison: the response, or the
// error's type, text, code, sentinels, details and parsed fields.
func describe(resp proto.Message, err error) string {
	var b strings.Builder
	if err != nil {
		st, _ := status.FromError(err)
		fmt.Fprintf(&b, "err=%T %q code=%v", err, err.Error(), st.Code())
		for _, s := range []error{client.ErrNotFound, client.ErrLeaseLost, client.ErrInvalidArgument, client.ErrUnavailable, client.ErrResourceExhausted, client.ErrPermissionDenied, client.ErrUnauthenticated, client.ErrClosed, client.ErrNotInProgress, context.Canceled, context.DeadlineExceeded} {
			if errors.Is(err, s) {
				fmt.Fprintf(&b, " is=%v", s)
			}
		}
		for _, d := range st.Details() {
			fmt.Fprintf(&b, " detail=%v", d)
		}
		var e *client.Error
		if errors.As(err, &e) {
			fmt.Fprintf(&b, " reason=%q delay=%v", e.Reason, e.RetryDelay)
		}
		return b.String()
	}
	if resp == nil {
		return "nil resp"
	}
	return prototext.Format(resp)
}

// TestLocalMatchesRemote runs one sequence of calls, valid and not, through
// Local and through *Client against idemd's gRPC server: every answer and
// every error must be the same.
func TestLocalMatchesRemote(t *testing.T) {
	clk := clockwork.NewFakeClockAt(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	run := func(remote bool) []string {
		ctx := testCtx(t)
		ie := startIdem(t, idemConfig{remote: remote, clock: clk, clientOpts: []client.Option{client.WithoutBreaker(), client.WithRetry(1, 0, 0)}})
		s := ie.svc
		var out []string
		add := func(name string, resp proto.Message, err error) { out = append(out, name+": "+describe(resp, err)) }
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		r, err := s.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k", Fingerprint: []byte("f")})
		add("reserve", r, err)
		r, err = s.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k", Fingerprint: []byte("f")})
		add("reserve again", r, err)
		r, err = s.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k", Fingerprint: []byte("g")})
		add("reserve mismatch", r, err)
		r, err = s.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "bad\xff"})
		add("reserve bad utf8", r, err)
		r, err = s.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "", Key: strings.Repeat("x", 300), LeaseTtl: durationpb.New(-time.Second)})
		add("reserve many bad", r, err)
		r, err = s.Reserve(cancelled, &idemv1.ReserveRequest{Namespace: "ns", Key: "cancelled"})
		add("reserve cancelled", r, err)
		l, err := s.Lookup(ctx, &idemv1.LookupRequest{Namespace: "ns", Key: "cancelled"})
		add("lookup cancelled", l, err)
		cp, err := s.Checkpoint(ctx, &idemv1.CheckpointRequest{Namespace: "ns", Key: "k", Token: 1, Phase: "p", Data: []byte("d")})
		add("checkpoint", cp, err)
		cp, err = s.Checkpoint(ctx, &idemv1.CheckpointRequest{Namespace: "ns", Key: "k", Token: 2, Phase: "p"})
		add("checkpoint wrong token", cp, err)
		ex, err := s.ExtendLease(ctx, &idemv1.ExtendLeaseRequest{Namespace: "ns", Key: "k", Token: 1})
		add("extend", ex, err)
		ex, err = s.ExtendLease(ctx, &idemv1.ExtendLeaseRequest{Namespace: "ns", Key: "absent", Token: 1})
		add("extend absent", ex, err)
		res := &idemv1.Result{Code: 5, Message: "m", Body: []byte{}, Details: []*anypb.Any{{TypeUrl: "t", Value: []byte("v")}}, Metadata: map[string]string{"a": "b", "c": ""}}
		c, err := s.Complete(ctx, &idemv1.CompleteRequest{Namespace: "ns", Key: "k", Token: 1, Result: res})
		add("complete", c, err)
		c, err = s.Complete(ctx, &idemv1.CompleteRequest{Namespace: "ns", Key: "k", Token: 1, Result: res})
		add("complete again", c, err)
		c, err = s.Complete(ctx, &idemv1.CompleteRequest{Namespace: "ns", Key: "k", Token: 1, Result: &idemv1.Result{}})
		add("complete other", c, err)
		c, err = s.Complete(ctx, &idemv1.CompleteRequest{Namespace: "ns", Key: "absent", Token: 1})
		add("complete absent nil result", c, err)
		c, err = s.Complete(ctx, &idemv1.CompleteRequest{Namespace: "ns", Key: "k", Token: 0, Result: &idemv1.Result{Message: "\xff"}})
		add("complete invalid", c, err)
		rl, err := s.Release(ctx, &idemv1.ReleaseRequest{Namespace: "ns", Key: "k", Token: 1})
		add("release completed", rl, err)
		r, err = s.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k", Fingerprint: []byte("f")})
		add("reserve completed", r, err)
		l, err = s.Lookup(ctx, &idemv1.LookupRequest{Namespace: "ns", Key: "k"})
		add("lookup", l, err)
		l, err = s.Lookup(ctx, &idemv1.LookupRequest{Namespace: "ns", Key: "nope"})
		add("lookup absent", l, err)
		br, err := s.BatchReserve(ctx, &idemv1.BatchReserveRequest{Namespace: "ns", Items: []*idemv1.BatchReserveRequest_Item{{Key: "k", Fingerprint: []byte("f")}, {Key: "b1"}, {Key: "b1"}, {Key: ""}, {Key: "k", Fingerprint: []byte("z")}}})
		add("batch reserve", br, err)
		bc, err := s.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: "ns", Items: []*idemv1.BatchCompleteRequest_Item{{Key: "b1", Token: 1, Result: &idemv1.Result{}}, {Key: "b1", Token: 1}, {Key: "zz", Token: 1}}})
		add("batch complete", bc, err)
		br, err = s.BatchReserve(ctx, &idemv1.BatchReserveRequest{Namespace: "ns"})
		add("batch reserve empty", br, err)
		return out
	}
	local, remote := run(false), run(true)
	for i := range local {
		if local[i] != remote[i] {
			t.Errorf("step %d differs:\nlocal:  %s\nremote: %s", i, local[i], remote[i])
		}
	}
}
