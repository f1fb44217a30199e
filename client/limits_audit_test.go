package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/idemhq/idem/client"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/memory"
)

// limitedIdem is an idem server with lim, reached in-process (Local) or
// over idemd's own gRPC server (*client.Client).
func limitedIdem(t *testing.T, lim server.Limits, remote bool, opts ...server.Option) (client.Service, *memory.Store) {
	t.Helper()
	store := memory.New(memory.WithLogger(quiet))
	srv, err := server.New(store, append([]server.Option{server.WithLogger(quiet), server.WithLimits(lim)}, opts...)...)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	t.Cleanup(func() {
		srv.Close()
		store.Close()
	})
	if !remote {
		return client.Local(srv), store
	}
	l := listen(t, false)
	serve(t, l, server.NewGRPCServer(srv))
	c, err := client.New(l.target, client.WithInsecure(), client.WithDialOptions(l.dial...), client.WithRetry(0, 0, 0))
	if err != nil {
		t.Fatalf("client.New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c, store
}

// wantRefused fails unless err is idem's INVALID_ARGUMENT naming exactly
// fields, through errors.Is, BadFields and the message alike.
func wantRefused(t *testing.T, what string, err error, fields ...string) {
	t.Helper()
	if !errors.Is(err, client.ErrInvalidArgument) || status.Code(err) != codes.InvalidArgument {
		t.Fatalf("%s error = %v, want INVALID_ARGUMENT naming %q", what, err, fields)
	}
	if got := client.BadFields(err); !slices.Equal(got, fields) {
		t.Errorf("%s BadFields = %q, want %q", what, got, fields)
	}
	for _, f := range fields {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("%s error %q does not name %q", what, err, f)
		}
	}
}

// TestClientTakesWhateverLimitsTheServerHas: the Go client (over the wire
// and Local) has no size checks of its own, so raised limits are usable up
// to their new value and lowered ones are refused by the server, naming the
// field, whichever way the client reaches it.
func TestClientTakesWhateverLimitsTheServerHas(t *testing.T) {
	raised := server.Limits{MaxKeyBytes: 512, MaxResultBytes: 3 << 20, MaxBatch: 1500, MaxFingerprintBytes: 128}
	lowered := server.Limits{MaxKeyBytes: 8, MaxResultBytes: 16, MaxBatch: 2, MaxFingerprintBytes: 2}
	for _, remote := range []bool{false, true} {
		for _, cfg := range []struct {
			name string
			lim  server.Limits
		}{{"raised", raised}, {"lowered", lowered}} {
			t.Run(fmt.Sprintf("%s/remote=%v", cfg.name, remote), func(t *testing.T) {
				ctx := testCtx(t)
				svc, store := limitedIdem(t, cfg.lim, remote)
				lim := cfg.lim
				key := func(tag string) string { return tag + strings.Repeat("k", lim.MaxKeyBytes-len(tag)) }
				snapshot := func() []*storage.Record {
					recs, _, err := store.List(ctx, storage.ListParams{Tenant: server.DefaultTenant, Namespace: "ns", Limit: 10000})
					if err != nil {
						t.Fatal(err)
					}
					return recs
				}

				// At the limits.
				r, err := svc.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: key("a"), Fingerprint: make([]byte, lim.MaxFingerprintBytes)})
				if err != nil || r.GetRecord().GetKey() != key("a") {
					t.Fatalf("Reserve(%d-byte key) = %v, %v", lim.MaxKeyBytes, r, err)
				}
				data := bytes.Repeat([]byte{0xa5}, lim.MaxResultBytes)
				if _, err := svc.Checkpoint(ctx, &idemv1.CheckpointRequest{Namespace: "ns", Key: key("a"), Token: 1, Phase: "p", Data: data}); err != nil {
					t.Fatalf("Checkpoint(%d-byte data) error = %v", len(data), err)
				}
				if _, err := svc.Complete(ctx, &idemv1.CompleteRequest{Namespace: "ns", Key: key("a"), Token: 1, Result: &idemv1.Result{Body: data}}); err != nil {
					t.Fatalf("Complete(%d-byte result) error = %v", len(data), err)
				}
				lk, err := svc.Lookup(ctx, &idemv1.LookupRequest{Namespace: "ns", Key: key("a")})
				if err != nil || !bytes.Equal(lk.GetRecord().GetResult().GetBody(), data) || !bytes.Equal(lk.GetRecord().GetCheckpoint().GetData(), data) {
					t.Fatalf("Lookup() = %v; want the result and checkpoint byte for byte", err)
				}
				items := make([]*idemv1.BatchReserveRequest_Item, lim.MaxBatch)
				for i := range items {
					items[i] = &idemv1.BatchReserveRequest_Item{Key: key(fmt.Sprintf("b%d", i))}
				}
				br, err := svc.BatchReserve(ctx, &idemv1.BatchReserveRequest{Namespace: "ns", Items: items})
				if err != nil || len(br.GetResults()) != lim.MaxBatch {
					t.Fatalf("BatchReserve(%d items) = %d results, %v", lim.MaxBatch, len(br.GetResults()), err)
				}
				done := make([]*idemv1.BatchCompleteRequest_Item, lim.MaxBatch)
				for i, res := range br.GetResults() {
					if res.GetError() != nil {
						t.Fatalf("BatchReserve results[%d] error = %v", i, res.GetError())
					}
					done[i] = &idemv1.BatchCompleteRequest_Item{Key: items[i].Key, Token: res.GetRecord().GetToken()}
				}
				done[0].Result = &idemv1.Result{Body: data}
				bc, err := svc.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: "ns", Items: done})
				if err != nil || len(bc.GetResults()) != lim.MaxBatch || bc.GetResults()[0].GetError() != nil {
					t.Fatalf("BatchComplete(%d items, one %d-byte result) = %v, %v", lim.MaxBatch, len(data), bc.GetResults(), err)
				}

				// One past each; nothing stored changes.
				held, err := svc.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: key("h")})
				if err != nil {
					t.Fatal(err)
				}
				tok := held.GetRecord().GetToken()
				before := snapshot()
				_, err = svc.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: key("h") + "k"})
				wantRefused(t, "Reserve(key over)", err, "key")
				_, err = svc.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: key("h"), Fingerprint: make([]byte, lim.MaxFingerprintBytes+1)})
				wantRefused(t, "Reserve(fingerprint over)", err, "fingerprint")
				_, err = svc.Complete(ctx, &idemv1.CompleteRequest{Namespace: "ns", Key: key("h"), Token: tok, Result: &idemv1.Result{Body: append(bytes.Clone(data), 1)}})
				wantRefused(t, "Complete(result over)", err, "result")
				_, err = svc.Checkpoint(ctx, &idemv1.CheckpointRequest{Namespace: "ns", Key: key("h"), Token: tok, Data: append(bytes.Clone(data), 1)})
				wantRefused(t, "Checkpoint(data over)", err, "data")
				over := make([]*idemv1.BatchCompleteRequest_Item, lim.MaxBatch+1)
				for i := range over {
					over[i] = &idemv1.BatchCompleteRequest_Item{Key: key(fmt.Sprintf("o%d", i)), Token: 1}
				}
				over[0] = &idemv1.BatchCompleteRequest_Item{Key: key("h"), Token: tok}
				_, err = svc.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: "ns", Items: over})
				wantRefused(t, "BatchComplete(items over)", err, "items")
				ro := make([]*idemv1.BatchReserveRequest_Item, lim.MaxBatch+1)
				for i := range ro {
					ro[i] = &idemv1.BatchReserveRequest_Item{Key: key(fmt.Sprintf("o%d", i))}
				}
				_, err = svc.BatchReserve(ctx, &idemv1.BatchReserveRequest{Namespace: "ns", Items: ro})
				wantRefused(t, "BatchReserve(items over)", err, "items")
				if after := snapshot(); !reflect.DeepEqual(before, after) {
					t.Errorf("records changed on refusal: had %d, have %d", len(before), len(after))
				}
			})
		}
	}
}

// TestInterceptorKeyAtTheLimit: the server interceptor takes the key from
// metadata as is: a key exactly at idem's limit (the default 256 bytes, or
// one an operator raised) is deduplicated; one byte more is INVALID_ARGUMENT
// naming the key, and the handler does not run.
func TestInterceptorKeyAtTheLimit(t *testing.T) {
	for _, maxKey := range []int{0, 400} {
		t.Run(fmt.Sprint("max key ", maxKey), func(t *testing.T) {
			ctx := testCtx(t)
			lim := server.Limits{MaxKeyBytes: maxKey}
			n := maxKey
			if n == 0 {
				n = 256
			}
			svc, store := limitedIdem(t, lim, true)
			ts := &testService{}
			a := startAppWith(t, appConfig{ts: ts}, svc)
			at := strings.Repeat("k", n)
			first, err, _ := a.call(ctx, at, unaryReq("x"))
			if err != nil {
				t.Fatalf("call with a %d-byte key: %v", n, err)
			}
			again, err, replayed := a.call(ctx, at, unaryReq("x"))
			if err != nil || !replayed || again != first {
				t.Errorf("retry with a %d-byte key = %q, %v, replayed %v; want the replay of %q", n, again, err, replayed, first)
			}
			before, _, _ := store.List(ctx, storage.ListParams{Tenant: server.DefaultTenant, Namespace: "/grpc.testing.TestService/UnaryCall", Limit: 10})
			_, err, _ = a.call(ctx, at+"k", unaryReq("x"))
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "key") {
				t.Errorf("call with a %d-byte key: %v, want INVALID_ARGUMENT naming the key", n+1, err)
			}
			after, _, _ := store.List(ctx, storage.ListParams{Tenant: server.DefaultTenant, Namespace: "/grpc.testing.TestService/UnaryCall", Limit: 10})
			if len(before) != 1 || len(after) != 1 || !reflect.DeepEqual(before[0], after[0]) {
				t.Errorf("records changed on refusal: %d before, %d after", len(before), len(after))
			}
			if got := ts.calls.Load(); got != 1 {
				t.Errorf("handler runs = %d, want 1", got)
			}
		})
	}
}

// TestInterceptorResultLimitRaised: with idem's result limit raised, an
// interceptor told the same limit (WithMaxResultSize) stores and replays a
// response past the default 1 MiB, byte for byte.
func TestInterceptorResultLimitRaised(t *testing.T) {
	ctx := testCtx(t)
	const limit = 3 << 20
	svc, _ := limitedIdem(t, server.Limits{MaxResultBytes: limit}, true)
	body := bytes.Repeat([]byte{0x5a, 0x00}, 1<<20) // 2 MiB
	ts := &testService{unary: func(_ context.Context, n int64, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		return &testgrpc.SimpleResponse{Payload: &testgrpc.Payload{Body: append(bytes.Clone(body), byte(n))}}, nil
	}}
	a := startAppWith(t, appConfig{ts: ts, opts: []client.InterceptorOption{client.WithMaxResultSize(limit)}}, svc)
	first, err, _ := a.call(ctx, "big", unaryReq("x"))
	if err != nil || len(first) != len(body)+1 {
		t.Fatalf("first call = %d bytes, %v", len(first), err)
	}
	again, err, replayed := a.call(ctx, "big", unaryReq("x"))
	if err != nil || !replayed || again != first {
		t.Errorf("retry = %d bytes, %v, replayed %v; want the first answer replayed byte for byte", len(again), err, replayed)
	}
	if n := ts.calls.Load(); n != 1 {
		t.Errorf("handler runs = %d, want 1", n)
	}
}

// TestInterceptorConfigAtIdemLimits: the interceptor's own settings that
// reach idem — the namespace (the full method), the tenant, the wait —
// work exactly at idem's limits; one past is a refusal of the service's
// configuration: UNAVAILABLE for the caller, an ERROR line naming the field
// for its operators, the handler not run and nothing stored.
func TestInterceptorConfigAtIdemLimits(t *testing.T) {
	method := func(n int) string { return "/" + strings.Repeat("m", n-len("/")-len("/X")) + "/X" }
	for _, tc := range []struct {
		name   string
		method string
		opts   []client.InterceptorOption
		field  string // empty: accepted
	}{
		{"256-byte method", method(256), nil, ""},
		{"257-byte method", method(257), nil, "namespace"},
		{"128-byte tenant", "/a.B/C", []client.InterceptorOption{client.WithTenantName(strings.Repeat("t", 128))}, ""},
		{"129-byte tenant", "/a.B/C", []client.InterceptorOption{client.WithTenantName(strings.Repeat("t", 129))}, "tenant"},
		{"30s wait", "/a.B/C", []client.InterceptorOption{client.WithWait(30 * time.Second)}, ""},
		{"wait 1ns over 30s", "/a.B/C", []client.InterceptorOption{client.WithWait(30*time.Second + 1)}, "wait"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			svc, store := limitedIdem(t, server.Limits{}, true)
			var logs logBuffer
			icpt := client.UnaryServerInterceptor(svc, append([]client.InterceptorOption{client.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil)))}, tc.opts...)...)
			runs := 0
			handler := func(context.Context, any) (any, error) { runs++; return &testgrpc.SimpleResponse{}, nil }
			// No deadline: the interceptor would clamp its wait to one.
			in := metadata.NewIncomingContext(context.WithoutCancel(ctx), metadata.Pairs(client.MetadataKey, "k"))
			_, err := icpt(in, unaryReq("x"), &grpc.UnaryServerInfo{FullMethod: tc.method}, handler)
			tenants := []string{server.DefaultTenant, strings.Repeat("t", 128), strings.Repeat("t", 129)}
			stored := 0
			for _, tn := range tenants {
				recs, _, _ := store.List(ctx, storage.ListParams{Tenant: tn, Namespace: tc.method, Limit: 10})
				stored += len(recs)
			}
			if tc.field == "" {
				if err != nil || runs != 1 || stored != 1 {
					t.Errorf("call = %v, handler runs %d, records %d; want success, 1, 1", err, runs, stored)
				}
				return
			}
			if status.Code(err) != codes.Unavailable || runs != 0 || stored != 0 {
				t.Errorf("call = %v, handler runs %d, records %d; want UNAVAILABLE, 0, 0", err, runs, stored)
			}
			if got := logs.String(); !strings.Contains(got, `"level":"ERROR"`) || !strings.Contains(got, tc.field) {
				t.Errorf("log = %s\nwant an ERROR line naming %s", got, tc.field)
			}
		})
	}
}

// TestInterceptorReleasesWhatIdemRefuses: a namespace policy may hold
// results to less than the interceptor's own limit. idem then refuses the
// Complete for good; the key was left IN_PROGRESS, so retries got ABORTED
// for the whole lease and then ran the handler again anyway. It is
// released, as a result over the interceptor's own limit is.
func TestInterceptorReleasesWhatIdemRefuses(t *testing.T) {
	ctx := testCtx(t)
	ns := testgrpc.TestService_UnaryCall_FullMethodName
	svc, store := limitedIdem(t, server.DefaultLimits(), true, server.WithNamespacePolicies(map[string]server.Policy{
		ns: {MaxResultSize: 16, StoreResults: true},
	}))
	ts := &testService{unary: func(_ context.Context, n int64, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		return &testgrpc.SimpleResponse{Payload: &testgrpc.Payload{Body: bytes.Repeat([]byte{'x'}, 100)}}, nil
	}}
	a := startAppWith(t, appConfig{ts: ts}, svc)
	if _, err, _ := a.call(ctx, "k", unaryReq("x")); err != nil {
		t.Fatalf("call = %v", err)
	}
	rec, err := store.Lookup(ctx, storage.ID{Tenant: server.DefaultTenant, Namespace: ns, Key: "k"})
	if err != nil || rec.State != storage.StateReleased {
		t.Errorf("record after a refused Complete = %+v, %v; want RELEASED", rec, err)
	}
}
