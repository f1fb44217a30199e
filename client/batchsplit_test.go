package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/idemhq/idem/client"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage/memory"
)

// splitIdem is idemd's own gRPC server (its message limits) over a memory
// store with lim, and a *client.Client with opts (no retries unless opts
// say so). It records the encoded size of each BatchComplete request idemd
// read; hook, when set, runs before the n-th (from 1) of them and may fail
// it.
type splitIdem struct {
	c    *client.Client
	mu   sync.Mutex
	got  []int
	hook func(ctx context.Context, n int) error
}

func startSplitIdem(t *testing.T, lim server.Limits, hook func(ctx context.Context, n int) error, opts ...client.Option) *splitIdem {
	t.Helper()
	store := memory.New(memory.WithLogger(quiet))
	srv, err := server.New(store, server.WithLogger(quiet), server.WithLimits(lim))
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	t.Cleanup(func() {
		srv.Close()
		store.Close()
	})
	e := &splitIdem{hook: hook}
	record := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if info.FullMethod == idemv1.IdempotencyService_BatchComplete_FullMethodName {
			e.mu.Lock()
			e.got = append(e.got, req.(*idemv1.BatchCompleteRequest).SizeVT())
			n := len(e.got)
			e.mu.Unlock()
			if e.hook != nil {
				if err := e.hook(ctx, n); err != nil {
					return nil, err
				}
			}
		}
		return h(ctx, req)
	}
	l := listen(t, false)
	serve(t, l, server.NewGRPCServer(srv, grpc.ChainUnaryInterceptor(record)))
	c, err := client.New(l.target, append([]client.Option{client.WithInsecure(), client.WithDialOptions(l.dial...), client.WithRetry(0, 0, 0)}, opts...)...)
	if err != nil {
		t.Fatalf("client.New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	e.c = c
	return e
}

// sizes is the encoded sizes of the BatchComplete requests idemd read.
func (e *splitIdem) sizes() []int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]int(nil), e.got...)
}

// body is a result body of n bytes distinct for each i.
func body(i, n int) []byte {
	b := bytes.Repeat([]byte{byte(0x11 * (i + 1))}, n)
	copy(b, fmt.Sprintf("item-%d:", i))
	return b
}

// reserveAll reserves keys k0…k(n-1) in ns and returns one BatchComplete
// item for each, with its token and a result body of sizes[i] bytes.
func reserveAll(t *testing.T, ctx context.Context, svc client.Service, ns string, sizes ...int) []*idemv1.BatchCompleteRequest_Item {
	t.Helper()
	items := make([]*idemv1.BatchCompleteRequest_Item, len(sizes))
	for i, n := range sizes {
		key := fmt.Sprintf("k%d", i)
		r, err := svc.Reserve(ctx, &idemv1.ReserveRequest{Namespace: ns, Key: key})
		if err != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
			t.Fatalf("Reserve(%s) = %v, %v", key, r.GetOutcome(), err)
		}
		items[i] = &idemv1.BatchCompleteRequest_Item{Key: key, Token: r.GetRecord().GetToken(), Result: &idemv1.Result{Code: int32(i), Body: body(i, n)}}
	}
	return items
}

// wantCompleted fails unless the answer to a BatchComplete of items holds
// no error for item i and the record of items[i] is COMPLETED with its
// result byte for byte, in the answer when the answer carries it and
// through Lookup.
func wantCompleted(t *testing.T, ctx context.Context, svc client.Service, ns string, items []*idemv1.BatchCompleteRequest_Item, resp *idemv1.BatchCompleteResponse, i int) {
	t.Helper()
	it := items[i]
	r := resp.GetResults()[i]
	if r.GetError() != nil {
		t.Errorf("results[%d] (%s) error = %v, want completed", i, it.GetKey(), r.GetError())
		return
	}
	if rec := r.GetRecord(); rec != nil && (rec.GetKey() != it.GetKey() || !bytes.Equal(rec.GetResult().GetBody(), it.GetResult().GetBody()) || rec.GetResult().GetCode() != it.GetResult().GetCode()) {
		t.Errorf("results[%d] record = key %q, %d-byte body; want key %q and its %d-byte body byte for byte", i, rec.GetKey(), len(rec.GetResult().GetBody()), it.GetKey(), len(it.GetResult().GetBody()))
	}
	lk, err := svc.Lookup(ctx, &idemv1.LookupRequest{Namespace: ns, Key: it.GetKey()})
	if err != nil || lk.GetRecord().GetState() != idemv1.RecordState_RECORD_STATE_COMPLETED ||
		!bytes.Equal(lk.GetRecord().GetResult().GetBody(), it.GetResult().GetBody()) || lk.GetRecord().GetResult().GetCode() != it.GetResult().GetCode() {
		t.Errorf("Lookup(%s) = %v, %d-byte body, %v; want COMPLETED with its %d-byte result byte for byte",
			it.GetKey(), lk.GetRecord().GetState(), len(lk.GetRecord().GetResult().GetBody()), err, len(it.GetResult().GetBody()))
	}
}

const mib = 1 << 20

// TestBatchCompleteSplitsWhatIdemdCannotRead: five valid 1 MiB results add
// up to more than the 4 MiB idemd reads. They used to fail as a whole
// with gRPC's RESOURCE_EXHAUSTED naming no field; the client sends them in
// several calls, each under the bound, and every item is completed with
// its result byte for byte, answered in request order.
func TestBatchCompleteSplitsWhatIdemdCannotRead(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  []client.Option
		bound int
		calls int // 0: at least 2
	}{
		{"default bound", nil, client.DefaultMaxRequestBytes, 0},
		{"WithMaxRequestBytes 1.5 MiB", []client.Option{client.WithMaxRequestBytes(3 * mib / 2)}, 3 * mib / 2, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			e := startSplitIdem(t, server.Limits{}, nil, tc.opts...)
			items := reserveAll(t, ctx, e.c, "ns", mib, mib, mib, mib, mib)
			req := &idemv1.BatchCompleteRequest{Namespace: "ns", Items: items}
			if n := req.SizeVT(); n <= 4*mib {
				t.Fatalf("request is %d bytes, want more than idemd's 4 MiB", n)
			}
			resp, err := e.c.BatchComplete(ctx, req)
			if err != nil || len(resp.GetResults()) != len(items) {
				t.Fatalf("BatchComplete(5 × 1 MiB) = %d results, %v; want 5, nil", len(resp.GetResults()), err)
			}
			for i := range items {
				wantCompleted(t, ctx, e.c, "ns", items, resp, i)
			}
			sizes := e.sizes()
			if len(sizes) < 2 || (tc.calls > 0 && len(sizes) != tc.calls) {
				t.Errorf("idemd read %d BatchComplete calls, want %d (0: at least 2)", len(sizes), tc.calls)
			}
			for i, n := range sizes {
				if n > tc.bound {
					t.Errorf("call %d was %d bytes, more than the bound %d", i, n, tc.bound)
				}
			}
			if len(req.GetItems()) != 5 || req.GetItems()[4] != items[4] {
				t.Errorf("the caller's request was modified")
			}
		})
	}
}

// TestBatchCompleteRaisedBoundSendsOneCall: against an idemd whose result
// limit is raised (it then reads 2×3 MiB + 64 KiB), a client told so with
// WithMaxRequestBytes sends the five 1 MiB results in one call.
func TestBatchCompleteRaisedBoundSendsOneCall(t *testing.T) {
	ctx := testCtx(t)
	const reads = 2*3*mib + 64<<10
	e := startSplitIdem(t, server.Limits{MaxResultBytes: 3 * mib}, nil, client.WithMaxRequestBytes(reads))
	items := reserveAll(t, ctx, e.c, "ns", mib, mib, mib, mib, mib)
	resp, err := e.c.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: "ns", Items: items})
	if err != nil || len(resp.GetResults()) != len(items) {
		t.Fatalf("BatchComplete(5 × 1 MiB) = %d results, %v", len(resp.GetResults()), err)
	}
	for i := range items {
		wantCompleted(t, ctx, e.c, "ns", items, resp, i)
	}
	if n := len(e.sizes()); n != 1 {
		t.Errorf("idemd read %d BatchComplete calls, want 1", n)
	}
}

// TestBatchCompleteItemTooLargeAlone: an item too large to go with any
// other is sent alone. When idemd cannot read even that (its result is
// over idemd's limit), that item alone fails with INVALID_ARGUMENT naming
// its result by its index in the caller's request, and is left as it was;
// the others complete, and item errors idemd answered in a later call name
// the item's index in the caller's request too. When idemd's result limit
// allows the item (the client's bound is only the default), it completes.
func TestBatchCompleteItemTooLargeAlone(t *testing.T) {
	t.Run("over idemd's limit", func(t *testing.T) {
		ctx := testCtx(t)
		e := startSplitIdem(t, server.Limits{}, nil)
		items := reserveAll(t, ctx, e.c, "ns", mib, 5*mib, mib, mib+1, mib)
		resp, err := e.c.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: "ns", Items: items})
		if err != nil || len(resp.GetResults()) != len(items) {
			t.Fatalf("BatchComplete = %d results, %v; want 5 item outcomes", len(resp.GetResults()), err)
		}
		for _, i := range []int{0, 2, 4} {
			wantCompleted(t, ctx, e.c, "ns", items, resp, i)
		}
		for _, i := range []int{1, 3} {
			ie := resp.GetResults()[i].GetError()
			field := fmt.Sprintf("items[%d].result", i)
			if codes.Code(ie.GetCode()) != codes.InvalidArgument || !strings.Contains(ie.GetMessage(), field) {
				t.Errorf("results[%d] error = %v, want INVALID_ARGUMENT naming %s", i, ie, field)
			}
			lk, err := e.c.Lookup(ctx, &idemv1.LookupRequest{Namespace: "ns", Key: items[i].GetKey()})
			if err != nil || lk.GetRecord().GetState() != idemv1.RecordState_RECORD_STATE_IN_PROGRESS {
				t.Errorf("Lookup(%s) = %v, %v; want it still IN_PROGRESS", items[i].GetKey(), lk.GetRecord().GetState(), err)
			}
		}
		if !strings.Contains(resp.GetResults()[1].GetError().GetMessage(), "larger than max") {
			t.Errorf("results[1] error %q does not say idemd refused it by size", resp.GetResults()[1].GetError().GetMessage())
		}
	})
	t.Run("within idemd's raised limit", func(t *testing.T) {
		ctx := testCtx(t)
		e := startSplitIdem(t, server.Limits{MaxResultBytes: 5 * mib}, nil)
		items := reserveAll(t, ctx, e.c, "ns", mib, 5*mib, mib)
		resp, err := e.c.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: "ns", Items: items})
		if err != nil || len(resp.GetResults()) != len(items) {
			t.Fatalf("BatchComplete = %d results, %v", len(resp.GetResults()), err)
		}
		for i := range items {
			wantCompleted(t, ctx, e.c, "ns", items, resp, i)
		}
		if n := len(e.sizes()); n != 3 {
			t.Errorf("idemd read %d BatchComplete calls, want 3 (the 5 MiB item alone)", n)
		}
	})
}

// TestBatchCompleteSplitRetriesAndDeadline: the calls of a split
// BatchComplete are retried as one call is, and share the caller's
// context: a later call failing as a whole fails BatchComplete as one call
// would (repeating it then completes everything), and once the caller's
// context ends BatchComplete returns ctx.Err() and sends no more calls.
func TestBatchCompleteSplitRetriesAndDeadline(t *testing.T) {
	unavailableOnce := func(ctx context.Context, n int) error {
		if n == 2 {
			return status.Error(codes.Unavailable, "injected")
		}
		return nil
	}
	t.Run("retried", func(t *testing.T) {
		ctx := testCtx(t)
		e := startSplitIdem(t, server.Limits{}, unavailableOnce, client.WithRetry(3, time.Nanosecond, time.Nanosecond))
		items := reserveAll(t, ctx, e.c, "ns", mib, mib, mib, mib, mib)
		resp, err := e.c.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: "ns", Items: items})
		if err != nil || len(resp.GetResults()) != len(items) {
			t.Fatalf("BatchComplete = %d results, %v; want the failed call retried", len(resp.GetResults()), err)
		}
		for i := range items {
			wantCompleted(t, ctx, e.c, "ns", items, resp, i)
		}
	})
	t.Run("not retried", func(t *testing.T) {
		ctx := testCtx(t)
		e := startSplitIdem(t, server.Limits{}, unavailableOnce)
		items := reserveAll(t, ctx, e.c, "ns", mib, mib, mib, mib, mib)
		req := &idemv1.BatchCompleteRequest{Namespace: "ns", Items: items}
		if resp, err := e.c.BatchComplete(ctx, req); !errors.Is(err, client.ErrUnavailable) || resp != nil {
			t.Fatalf("BatchComplete = %v, %v; want nil, UNAVAILABLE as for one call", resp, err)
		}
		resp, err := e.c.BatchComplete(ctx, req)
		if err != nil || len(resp.GetResults()) != len(items) {
			t.Fatalf("BatchComplete again = %d results, %v", len(resp.GetResults()), err)
		}
		for i := range items {
			wantCompleted(t, ctx, e.c, "ns", items, resp, i)
		}
	})
	t.Run("context ends", func(t *testing.T) {
		ctx, cancel := context.WithCancel(testCtx(t))
		defer cancel()
		// The second call ends the caller's context and waits until gRPC
		// has ended it on idemd's side too.
		e := startSplitIdem(t, server.Limits{}, func(sctx context.Context, n int) error {
			if n == 2 {
				cancel()
				<-sctx.Done()
				return sctx.Err()
			}
			return nil
		})
		items := reserveAll(t, testCtx(t), e.c, "ns", mib, mib, mib, mib, mib, mib, mib, mib, mib)
		resp, err := e.c.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: "ns", Items: items})
		if !errors.Is(err, context.Canceled) || resp != nil {
			t.Fatalf("BatchComplete = %v, %v; want nil, context.Canceled", resp, err)
		}
		if n := len(e.sizes()); n != 2 {
			t.Errorf("idemd read %d BatchComplete calls, want 2 (none after the context ended)", n)
		}
	})
}

// countingServer counts the BatchComplete calls reaching the engine.
type countingServer struct {
	*server.Service
	mu    sync.Mutex
	calls int
}

func (s *countingServer) BatchComplete(ctx context.Context, req *idemv1.BatchCompleteRequest) (*idemv1.BatchCompleteResponse, error) {
	s.mu.Lock()
	s.calls++
	s.mu.Unlock()
	return s.Service.BatchComplete(ctx, req)
}

// TestLocalBatchCompleteDoesNotSplit: Local has no wire to limit, so the
// five 1 MiB results reach the engine as one call, and are completed.
func TestLocalBatchCompleteDoesNotSplit(t *testing.T) {
	ctx := testCtx(t)
	store := memory.New(memory.WithLogger(quiet))
	srv, err := server.New(store, server.WithLogger(quiet))
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	t.Cleanup(func() {
		srv.Close()
		store.Close()
	})
	cs := &countingServer{Service: srv}
	svc := client.Local(cs)
	items := reserveAll(t, ctx, svc, "ns", mib, mib, mib, mib, mib)
	resp, err := svc.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: "ns", Items: items})
	if err != nil || len(resp.GetResults()) != len(items) {
		t.Fatalf("BatchComplete(5 × 1 MiB) = %d results, %v", len(resp.GetResults()), err)
	}
	for i := range items {
		wantCompleted(t, ctx, svc, "ns", items, resp, i)
	}
	if cs.calls != 1 {
		t.Errorf("engine saw %d BatchComplete calls, want 1", cs.calls)
	}
}
