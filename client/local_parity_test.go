package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
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
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/memory"
)

// describe renders an answer for comparison: the response, or the
// error's type, text, code, sentinels, details and parsed fields.
func describe(resp proto.Message, err error) string {
	var b strings.Builder
	if err != nil {
		st, _ := status.FromError(err)
		fmt.Fprintf(&b, "err=%T %q code=%v", err, err.Error(), st.Code())
		for _, s := range []error{client.ErrNotFound, client.ErrLeaseLost, client.ErrInvalidArgument, client.ErrUnavailable, client.ErrResourceExhausted, client.ErrPermissionDenied, client.ErrUnauthenticated, client.ErrClosed, client.ErrNotInProgress, client.ErrDamaged, context.Canceled, context.DeadlineExceeded} {
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

// compareLocalRemote runs steps through Local and through *Client against
// idemd's gRPC server, each over a fresh server on its own fake clock
// (started at the same time, so records compare equal); every answer must
// be the same.
func compareLocalRemote(t *testing.T, steps func(ctx context.Context, s client.Service, clk *clockwork.FakeClock, add func(string, proto.Message, error))) {
	t.Helper()
	run := func(remote bool) []string {
		ctx := testCtx(t)
		clk := clockwork.NewFakeClockAt(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
		s := startOver(t, damagedStore{memory.New(memory.WithClock(clk), memory.WithLogger(quiet), memory.WithSweepInterval(0))}, clk, remote)
		var out []string
		steps(ctx, s, clk, func(name string, resp proto.Message, err error) { out = append(out, name+": "+describe(resp, err)) })
		return out
	}
	local, remote := run(false), run(true)
	if len(local) != len(remote) {
		t.Fatalf("Local ran %d steps, remote %d", len(local), len(remote))
	}
	for i := range local {
		if local[i] != remote[i] {
			t.Errorf("step %d differs:\nlocal:  %s\nremote: %s", i, local[i], remote[i])
		}
	}
}

// startOver serves a Service over store, reached through Local or through
// *Client over bufconn with idemd's gRPC server.
func startOver(t *testing.T, store damagedStore, clk clockwork.Clock, remote bool) client.Service {
	t.Helper()
	srv, err := server.New(store, server.WithClock(clk), server.WithLogger(quiet))
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	t.Cleanup(func() {
		srv.Close()
		store.Close()
	})
	if !remote {
		return client.Local(srv)
	}
	l := listen(t, false)
	serve(t, l, server.NewGRPCServer(srv))
	opts := []client.Option{client.WithInsecure(), client.WithDialOptions(l.dial...), client.WithoutBreaker(), client.WithRetry(1, 0, 0)}
	c, err := client.New(l.target, opts...)
	if err != nil {
		t.Fatalf("client.New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// damagedKey is the key whose record damagedStore cannot decode.
const damagedKey = "damaged"

// damagedStore is a memory store holding, in every namespace, a record
// for damagedKey that it cannot decode, answered as a backend answers one.
type damagedStore struct{ *memory.Store }

func (d damagedStore) check(id storage.ID) error {
	if id.Key == damagedKey {
		return storage.Damaged(id, errors.New("unexpected end of record"))
	}
	return nil
}

func (d damagedStore) Reserve(ctx context.Context, p storage.ReserveParams) (storage.Outcome, *storage.Record, error) {
	if err := d.check(p.ID); err != nil {
		return 0, nil, err
	}
	return d.Store.Reserve(ctx, p)
}

func (d damagedStore) Complete(ctx context.Context, p storage.CompleteParams) (*storage.Record, error) {
	if err := d.check(p.ID); err != nil {
		return nil, err
	}
	return d.Store.Complete(ctx, p)
}

func (d damagedStore) Lookup(ctx context.Context, id storage.ID) (*storage.Record, error) {
	if err := d.check(id); err != nil {
		return nil, err
	}
	return d.Store.Lookup(ctx, id)
}

func (d damagedStore) BatchReserve(ctx context.Context, items []storage.ReserveParams) ([]storage.ReserveResult, error) {
	out, err := d.Store.BatchReserve(ctx, items)
	if err != nil {
		return nil, err
	}
	for i, p := range items {
		if err := d.check(p.ID); err != nil {
			out[i] = storage.ReserveResult{Err: err}
		}
	}
	return out, nil
}

func (d damagedStore) BatchComplete(ctx context.Context, items []storage.CompleteParams) ([]storage.CompleteResult, error) {
	out, err := d.Store.BatchComplete(ctx, items)
	if err != nil {
		return nil, err
	}
	for i, p := range items {
		if err := d.check(p.ID); err != nil {
			out[i] = storage.CompleteResult{Err: err}
		}
	}
	return out, nil
}

// A record the store cannot decode is DATA_LOSS, reason DAMAGED, naming
// the key, and ErrDamaged in Go, for Local as over the wire; in a batch
// it fails its own item only.
func TestLocalMatchesRemoteDamaged(t *testing.T) {
	compareLocalRemote(t, func(ctx context.Context, s client.Service, _ *clockwork.FakeClock, add func(string, proto.Message, error)) {
		r, err := s.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: damagedKey})
		add("reserve damaged", r, err)
		if !errors.Is(err, client.ErrDamaged) {
			t.Errorf("Reserve() of a damaged record error = %v, want ErrDamaged", err)
		}
		c, err := s.Complete(ctx, &idemv1.CompleteRequest{Namespace: "ns", Key: damagedKey, Token: 1})
		add("complete damaged", c, err)
		l, err := s.Lookup(ctx, &idemv1.LookupRequest{Namespace: "ns", Key: damagedKey})
		add("lookup damaged", l, err)
		br, err := s.BatchReserve(ctx, &idemv1.BatchReserveRequest{Namespace: "ns", Items: []*idemv1.BatchReserveRequest_Item{{Key: "a"}, {Key: damagedKey}, {Key: "b"}}})
		add("batch reserve with a damaged item", br, err)
		bc, err := s.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: "ns", Items: []*idemv1.BatchCompleteRequest_Item{{Key: "a", Token: 1}, {Key: damagedKey, Token: 1}, {Key: "b", Token: 1}}})
		add("batch complete with a damaged item", bc, err)
	})
}

// A call whose context already ended answers ctx.Err(), as *Client does
// (gRPC does not send it), even where the server would answer it without
// reaching a store: a bad field, a batch of bad items, an empty batch.
func TestLocalMatchesRemoteEndedContext(t *testing.T) {
	compareLocalRemote(t, func(ctx context.Context, s client.Service, _ *clockwork.FakeClock, add func(string, proto.Message, error)) {
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		expired, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
		defer cancel()
		for _, c := range []struct {
			name string
			ctx  context.Context
		}{{"cancelled", cancelled}, {"expired", expired}} {
			name, ctx := c.name, c.ctx
			r, err := s.Reserve(ctx, &idemv1.ReserveRequest{Key: "k"})
			add(name+" reserve without namespace", r, err)
			if !errors.Is(err, ctx.Err()) {
				t.Errorf("%s: Reserve() error = %v, want %v", name, err, ctx.Err())
			}
			c, err := s.Complete(ctx, &idemv1.CompleteRequest{Namespace: "ns", Key: "k"})
			add(name+" complete without token", c, err)
			br, err := s.BatchReserve(ctx, &idemv1.BatchReserveRequest{Namespace: "ns", Items: []*idemv1.BatchReserveRequest_Item{{Key: ""}}})
			add(name+" batch reserve of bad items", br, err)
			br, err = s.BatchReserve(ctx, &idemv1.BatchReserveRequest{Namespace: "ns"})
			add(name+" empty batch reserve", br, err)
			bc, err := s.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: "ns"})
			add(name+" empty batch complete", bc, err)
		}
	})
}

// Waiting, and the batch limit: the same answers in-process as over the wire.
func TestLocalMatchesRemoteWaitAndLimits(t *testing.T) {
	compareLocalRemote(t, func(ctx context.Context, s client.Service, clk *clockwork.FakeClock, add func(string, proto.Message, error)) {
		r, err := s.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "w"})
		add("reserve", r, err)
		var wg sync.WaitGroup
		var waited *idemv1.ReserveResponse
		var waitErr error
		wg.Add(1)
		go func() {
			defer wg.Done()
			waited, waitErr = s.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "w", Wait: durationpb.New(10 * time.Second)})
		}()
		// The waiter's two timers: the wait's end and the next poll.
		if err := clk.BlockUntilContext(ctx, 2); err != nil {
			t.Fatalf("the waiting Reserve never waited: %v", err)
		}
		c, err := s.Complete(ctx, &idemv1.CompleteRequest{Namespace: "ns", Key: "w", Token: 1, Result: &idemv1.Result{Body: []byte("done")}})
		add("complete", c, err)
		wg.Wait()
		add("reserve that waited", waited, waitErr)
		if waited.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED {
			t.Errorf("waiting Reserve() = %v, %v; want COMPLETED", waited.GetOutcome(), waitErr)
		}
		r, err = s.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "w", Wait: durationpb.New(31 * time.Second)})
		add("reserve wait over the limit", r, err)
		items := make([]*idemv1.BatchReserveRequest_Item, 1001)
		for i := range items {
			items[i] = &idemv1.BatchReserveRequest_Item{Key: fmt.Sprintf("k%d", i)}
		}
		br, err := s.BatchReserve(ctx, &idemv1.BatchReserveRequest{Namespace: "ns", Items: items})
		add("batch reserve of 1001 items", br, err)
		done := make([]*idemv1.BatchCompleteRequest_Item, 1001)
		for i := range done {
			done[i] = &idemv1.BatchCompleteRequest_Item{Key: fmt.Sprintf("k%d", i), Token: 1}
		}
		bc, err := s.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: "ns", Items: done})
		add("batch complete of 1001 items", bc, err)
	})
}
