package server

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/idemhq/idem/internal/codec"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

const testNS = "/payments.v1.Payments/Charge"

func TestBadInputIsRejectedAndChangesNothing(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	// A record in progress, which the bad calls below must leave alone.
	held, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "held", Fingerprint: []byte("fp")})
	if err != nil {
		t.Fatalf("Reserve(held) error = %v", err)
	}
	token := held.GetRecord().GetToken()
	big := bytes.Repeat([]byte("x"), 1<<20+1)

	reserve := func(mod func(r *idemv1.ReserveRequest)) func(context.Context) error {
		return func(ctx context.Context) error {
			r := &idemv1.ReserveRequest{Namespace: testNS, Key: "held", Fingerprint: []byte("fp")}
			mod(r)
			_, err := e.idem.Reserve(ctx, r)
			return err
		}
	}
	// direct calls the Service in process: a proto3 string holding invalid
	// UTF-8 cannot be marshalled onto the wire, but an in-process caller
	// (client.Local) can still hand one over.
	direct := func(key string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := e.svc.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: key})
			return err
		}
	}
	// wire sends a call with idem's own codec, which (like other languages'
	// protobuf encoders) puts invalid UTF-8 on the wire, where protobuf-go's
	// would refuse to encode it: what idemd decodes with the generated code
	// must still be checked.
	wire := grpc.ForceCodecV2(codec.Codec{})
	complete := func(res *idemv1.Result) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: testNS, Key: "held", Token: token, Result: res}, wire)
			return err
		}
	}
	tests := []struct {
		name string
		call func(context.Context) error
		want []string
	}{
		{"invalid UTF-8 key on the wire", func(ctx context.Context) error {
			_, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "held\xff"}, wire)
			return err
		}, []string{"key"}},
		{"invalid UTF-8 tenant and namespace on the wire", func(ctx context.Context) error {
			_, err := e.idem.Lookup(ctx, &idemv1.LookupRequest{Tenant: "t\xc3", Namespace: "n\x80", Key: "held"}, wire)
			return err
		}, []string{"tenant", "namespace"}},
		{"complete with an invalid UTF-8 result message", complete(&idemv1.Result{Message: "charged \xe2\x82"}), []string{"result.message"}},
		{"complete with an invalid UTF-8 metadata value", complete(&idemv1.Result{Metadata: map[string]string{"m": "\xff"}}), []string{`result.metadata["m"]`}},
		{"complete with an invalid UTF-8 metadata key", complete(&idemv1.Result{Metadata: map[string]string{"\xff": "v"}}), []string{"result.metadata"}},
		// A 100 KB key is named by its start: the whole key would make the
		// error, and the call log line carrying it, as large.
		{"complete with an invalid UTF-8 value under a 100 KB metadata key", complete(&idemv1.Result{Metadata: map[string]string{strings.Repeat("m", 100_000): "\xff"}}),
			[]string{`result.metadata["` + strings.Repeat("m", 64) + `"…(100000 bytes)]`}},
		{"complete with an invalid UTF-8 detail type URL", complete(&idemv1.Result{Details: []*anypb.Any{{TypeUrl: "ok"}, {TypeUrl: "\xfe"}}}), []string{"result.details[1].type_url"}},
		{"checkpoint with an invalid UTF-8 phase", func(ctx context.Context) error {
			_, err := e.idem.Checkpoint(ctx, &idemv1.CheckpointRequest{Namespace: testNS, Key: "held", Token: token, Phase: "\xff"}, wire)
			return err
		}, []string{"phase"}},
		{"empty key", reserve(func(r *idemv1.ReserveRequest) { r.Key = "" }), []string{"key"}},
		{"257-byte key", reserve(func(r *idemv1.ReserveRequest) { r.Key = strings.Repeat("k", 257) }), []string{"key"}},
		{"control character in key", reserve(func(r *idemv1.ReserveRequest) { r.Key = "held\x01" }), []string{"key"}},
		{"newline in key", reserve(func(r *idemv1.ReserveRequest) { r.Key = "he\nld" }), []string{"key"}},
		{"invalid UTF-8 key", direct("held\xff"), []string{"key"}},
		{"missing namespace", reserve(func(r *idemv1.ReserveRequest) { r.Namespace = "" }), []string{"namespace"}},
		{"129-byte tenant", reserve(func(r *idemv1.ReserveRequest) { r.Tenant = strings.Repeat("t", 129) }), []string{"tenant"}},
		{"65-byte fingerprint", reserve(func(r *idemv1.ReserveRequest) { r.Fingerprint = bytes.Repeat([]byte{1}, 65) }), []string{"fingerprint"}},
		{"negative lease", reserve(func(r *idemv1.ReserveRequest) { r.LeaseTtl = durationpb.New(-time.Second) }), []string{"lease_ttl"}},
		{"lease under min", reserve(func(r *idemv1.ReserveRequest) { r.LeaseTtl = durationpb.New(time.Millisecond) }), []string{"lease_ttl"}},
		{"lease over max", reserve(func(r *idemv1.ReserveRequest) { r.LeaseTtl = durationpb.New(time.Hour + time.Second) }), []string{"lease_ttl"}},
		{"malformed lease", reserve(func(r *idemv1.ReserveRequest) { r.LeaseTtl = &durationpb.Duration{Seconds: 1, Nanos: -1} }), []string{"lease_ttl"}},
		{"retention over max", reserve(func(r *idemv1.ReserveRequest) { r.Retention = durationpb.New(31 * 24 * time.Hour) }), []string{"retention"}},
		{"negative retention", reserve(func(r *idemv1.ReserveRequest) { r.Retention = durationpb.New(-time.Hour) }), []string{"retention"}},
		{"wait over max", reserve(func(r *idemv1.ReserveRequest) { r.Wait = durationpb.New(31 * time.Second) }), []string{"wait"}},
		{"negative wait", reserve(func(r *idemv1.ReserveRequest) { r.Wait = durationpb.New(-time.Second) }), []string{"wait"}},
		{"every bad field at once", reserve(func(r *idemv1.ReserveRequest) {
			r.Key = ""
			r.Fingerprint = bytes.Repeat([]byte{1}, 65)
			r.LeaseTtl = durationpb.New(-time.Second)
			r.Wait = durationpb.New(time.Minute)
		}), []string{"key", "fingerprint", "lease_ttl", "wait"}},
		{"complete with token 0", func(ctx context.Context) error {
			_, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: testNS, Key: "held", Token: 0, Result: &idemv1.Result{Body: []byte("ok")}})
			return err
		}, []string{"token"}},
		{"complete with result body over limit", func(ctx context.Context) error {
			_, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: testNS, Key: "held", Token: token, Result: &idemv1.Result{Body: big}})
			return err
		}, []string{"result"}},
		{"complete with metadata pushing the result over limit", func(ctx context.Context) error {
			_, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: testNS, Key: "held", Token: token, Result: &idemv1.Result{
				Body: big[:1<<19], Metadata: map[string]string{"m": string(big[:1<<19])}}})
			return err
		}, []string{"result"}},
		{"complete with retention over max", func(ctx context.Context) error {
			_, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: testNS, Key: "held", Token: token, Retention: durationpb.New(31 * 24 * time.Hour)})
			return err
		}, []string{"retention"}},
		{"release with token 0", func(ctx context.Context) error {
			_, err := e.idem.Release(ctx, &idemv1.ReleaseRequest{Namespace: testNS, Key: "held"})
			return err
		}, []string{"token"}},
		{"extend with token 0 and lease over max", func(ctx context.Context) error {
			_, err := e.idem.ExtendLease(ctx, &idemv1.ExtendLeaseRequest{Namespace: testNS, Key: "held", LeaseTtl: durationpb.New(2 * time.Hour)})
			return err
		}, []string{"token", "lease_ttl"}},
		{"checkpoint with long phase and big data", func(ctx context.Context) error {
			_, err := e.idem.Checkpoint(ctx, &idemv1.CheckpointRequest{Namespace: testNS, Key: "held", Token: token, Phase: strings.Repeat("p", 257), Data: big})
			return err
		}, []string{"phase", "data"}},
		{"lookup with empty key", func(ctx context.Context) error {
			_, err := e.idem.Lookup(ctx, &idemv1.LookupRequest{Namespace: testNS})
			return err
		}, []string{"key"}},
		{"batch reserve of 1001 items", func(ctx context.Context) error {
			items := make([]*idemv1.BatchReserveRequest_Item, 1001)
			for i := range items {
				items[i] = &idemv1.BatchReserveRequest_Item{Key: fmt.Sprintf("b%d", i)}
			}
			_, err := e.idem.BatchReserve(ctx, &idemv1.BatchReserveRequest{Namespace: testNS, Items: items})
			return err
		}, []string{"items"}},
		{"batch complete of 1001 items", func(ctx context.Context) error {
			items := make([]*idemv1.BatchCompleteRequest_Item, 1001)
			for i := range items {
				items[i] = &idemv1.BatchCompleteRequest_Item{Key: fmt.Sprintf("b%d", i), Token: 1}
			}
			_, err := e.idem.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: testNS, Items: items})
			return err
		}, []string{"items"}},
		{"list with bad page size and token", func(ctx context.Context) error {
			_, err := e.admin.ListKeys(ctx, &idemv1.ListKeysRequest{Namespace: testNS, PageSize: 1001, PageToken: "not a token"})
			return err
		}, []string{"page_size", "page_token"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			before := e.snapshot(ctx, t, DefaultTenant, testNS)
			err := tt.call(ctx)
			if got := status.Code(err); got != codes.InvalidArgument {
				t.Fatalf("code = %v (%v), want InvalidArgument", got, err)
			}
			got := badFields(t, err)
			if !slices.Equal(got, tt.want) {
				t.Errorf("BadRequest fields = %q, want %q", got, tt.want)
			}
			msg := status.Convert(err).Message()
			if !strings.HasPrefix(msg, "idem: invalid ") {
				t.Errorf("message = %q, want prefix %q", msg, "idem: invalid ")
			}
			for _, f := range tt.want {
				if !strings.Contains(msg, f) {
					t.Errorf("message = %q, want it to name %q", msg, f)
				}
			}
			assertUnchanged(t, before, e.snapshot(ctx, t, DefaultTenant, testNS))
		})
	}
}

func TestDefaultsApplyForAbsentDurations(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	resp, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "k", LeaseTtl: durationpb.New(0)})
	if err != nil {
		t.Fatalf("Reserve(lease 0) error = %v, want the default lease", err)
	}
	rec := resp.GetRecord()
	if got := rec.GetLeaseExpiresAt().AsTime().Sub(rec.GetCreatedAt().AsTime()); got != 30*time.Second {
		t.Errorf("lease = %v, want the default 30s", got)
	}
	if got := rec.GetExpiresAt().AsTime().Sub(rec.GetCreatedAt().AsTime()); got != 24*time.Hour {
		t.Errorf("retention = %v, want the default 24h", got)
	}
	if got := rec.GetTenant(); got != DefaultTenant {
		t.Errorf("tenant = %q, want %q", got, DefaultTenant)
	}
}

func TestBatchBadItemFailsAlone(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	resp, err := e.idem.BatchReserve(ctx, &idemv1.BatchReserveRequest{Namespace: testNS, Items: []*idemv1.BatchReserveRequest_Item{
		{Key: "a"},
		{Key: "b\x00"},
		{Key: "c", Fingerprint: bytes.Repeat([]byte{1}, 65)},
		{Key: "a"},
		{Key: "d"},
	}})
	if err != nil {
		t.Fatalf("BatchReserve() error = %v", err)
	}
	res := resp.GetResults()
	if len(res) != 5 {
		t.Fatalf("got %d results, want 5", len(res))
	}
	wantErr := map[int]string{1: "items[1].key", 2: "items[2].fingerprint", 3: "items[3].key"}
	for i, r := range res {
		if field, bad := wantErr[i]; bad {
			if r.GetError().GetCode() != int32(codes.InvalidArgument) || !strings.Contains(r.GetError().GetMessage(), field) {
				t.Errorf("results[%d].error = %v, want InvalidArgument naming %s", i, r.GetError(), field)
			}
			if r.GetRecord() != nil {
				t.Errorf("results[%d].record = %v, want none", i, r.GetRecord())
			}
			continue
		}
		if r.GetError() != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
			t.Errorf("results[%d] = %v, want RESERVED", i, r)
		}
	}
	var keys []string
	for _, r := range e.snapshot(ctx, t, DefaultTenant, testNS) {
		keys = append(keys, r.Key)
	}
	if want := []string{"a", "d"}; !slices.Equal(keys, want) {
		t.Errorf("stored keys = %q, want %q", keys, want)
	}

	// The same in BatchComplete: a token-0 item fails, the others complete.
	cresp, err := e.idem.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: testNS, Items: []*idemv1.BatchCompleteRequest_Item{
		{Key: "a", Token: 1, Result: &idemv1.Result{Body: []byte("A")}},
		{Key: "d", Token: 0},
		{Key: "zz", Token: 1},
	}})
	if err != nil {
		t.Fatalf("BatchComplete() error = %v", err)
	}
	cres := cresp.GetResults()
	if got := cres[0].GetRecord().GetState(); got != idemv1.RecordState_RECORD_STATE_COMPLETED {
		t.Errorf("results[0] state = %v, want COMPLETED", got)
	}
	if got := cres[1].GetError(); got.GetCode() != int32(codes.InvalidArgument) || !strings.Contains(got.GetMessage(), "items[1].token") {
		t.Errorf("results[1].error = %v, want InvalidArgument naming items[1].token", got)
	}
	if got := cres[2].GetError().GetCode(); got != int32(codes.NotFound) {
		t.Errorf("results[2].error code = %v, want NotFound", codes.Code(got))
	}
	rec, err := e.store.Lookup(ctx, storageID("d"))
	if err != nil || rec.State.String() != "IN_PROGRESS" {
		t.Errorf("record d = %v, %v, want IN_PROGRESS", rec, err)
	}
}
