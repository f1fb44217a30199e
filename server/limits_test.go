package server

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"slices"
	"strconv"
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
	"github.com/idemhq/idem/storage"
)

// limitCase is one call at or just past a default limit (DefaultLimits): want
// nil means the call must succeed, otherwise it must be INVALID_ARGUMENT
// with a BadRequest naming exactly want.
type limitCase struct {
	name string
	call func(context.Context) error
	want []string
}

// runLimitCases runs cases over the wire; a rejected call must leave the
// records of every (tenant, namespace) in watch as they were.
func runLimitCases(t *testing.T, e *testEnv, watch [][2]string, cases []limitCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			snap := func() [][]*storage.Record {
				var all [][]*storage.Record
				for _, w := range watch {
					all = append(all, e.snapshot(ctx, t, w[0], w[1]))
				}
				return all
			}
			before := snap()
			err := tt.call(ctx)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("error = %v, want success at the limit", err)
				}
				return
			}
			wantInvalid(t, err, tt.want...)
			after := snap()
			for i := range before {
				assertUnchanged(t, before[i], after[i])
			}
		})
	}
}

// wantInvalid fails unless err is INVALID_ARGUMENT with a BadRequest
// naming exactly fields, each also named in the message.
func wantInvalid(t *testing.T, err error, fields ...string) {
	t.Helper()
	if got := status.Code(err); got != codes.InvalidArgument {
		t.Fatalf("code = %v (%v), want InvalidArgument naming %q", got, err, fields)
	}
	if got := badFields(t, err); !slices.Equal(got, fields) {
		t.Errorf("BadRequest fields = %q, want %q (%v)", got, fields, err)
	}
	msg := status.Convert(err).Message()
	for _, f := range fields {
		if !strings.Contains(msg, f) {
			t.Errorf("message = %q, want it to name %q", msg, f)
		}
	}
}

// wantItemInvalid fails unless an item error is INVALID_ARGUMENT naming field.
func wantItemInvalid(t *testing.T, i int, ie *idemv1.ItemError, field string) {
	t.Helper()
	if ie.GetCode() != int32(codes.InvalidArgument) || !strings.Contains(ie.GetMessage(), field) {
		t.Errorf("results[%d].error = %v, want InvalidArgument naming %s", i, ie, field)
	}
}

// resultOfSize is a result whose storage.Result.Size is n, spread over
// every part that counts.
func resultOfSize(n int) *idemv1.Result {
	r := &idemv1.Result{
		Code:     3,
		Message:  "msg",
		Details:  []*anypb.Any{{TypeUrl: "type.example.com/x.Y", Value: []byte("dv")}},
		Metadata: map[string]string{"mkey": "mval"},
	}
	r.Body = bytes.Repeat([]byte{'b'}, n-(len("msg")+len("type.example.com/x.Y")+len("dv")+len("mkeymval")))
	return r
}

func emptyDetails(n int) []*anypb.Any {
	d := make([]*anypb.Any, n)
	for i := range d {
		d[i] = &anypb.Any{}
	}
	return d
}

// shortMetadata is n distinct metadata entries of at most 6 bytes each.
func shortMetadata(n int) map[string]string {
	m := make(map[string]string, n)
	for i := range n {
		m[strconv.FormatInt(int64(i), 36)] = ""
	}
	return m
}

func TestLimitsAtTheBoundary(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	const mib = 1 << 20
	held, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "held", Fingerprint: []byte("fp")})
	if err != nil {
		t.Fatalf("Reserve(held) error = %v", err)
	}
	token := held.GetRecord().GetToken()
	wire := grpc.ForceCodecV2(codec.Codec{})
	n := 0
	fresh := func() string { n++; return fmt.Sprintf("fresh-%d", n) }
	reserve := func(mod func(r *idemv1.ReserveRequest)) func(context.Context) error {
		return func(ctx context.Context) error {
			r := &idemv1.ReserveRequest{Namespace: testNS, Key: fresh(), Fingerprint: []byte("fp")}
			mod(r)
			resp, err := e.idem.Reserve(ctx, r)
			if err == nil && resp.GetRecord().GetKey() != r.Key {
				return fmt.Errorf("stored key %q, want %q", resp.GetRecord().GetKey(), r.Key)
			}
			return err
		}
	}
	// reserveHeld aims a bad Reserve at the held record, so a wrongly
	// accepted call would show as a change in it.
	reserveHeld := func(mod func(r *idemv1.ReserveRequest)) func(context.Context) error {
		return func(ctx context.Context) error {
			r := &idemv1.ReserveRequest{Namespace: testNS, Key: "held", Fingerprint: []byte("fp")}
			mod(r)
			_, err := e.idem.Reserve(ctx, r)
			return err
		}
	}
	// completeNew reserves a fresh key and completes it with res and ret.
	completeNew := func(res *idemv1.Result, ret *durationpb.Duration) func(context.Context) error {
		return func(ctx context.Context) error {
			k := fresh()
			r, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: k})
			if err != nil {
				return err
			}
			_, err = e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: testNS, Key: k, Token: r.GetRecord().GetToken(), Result: res, Retention: ret})
			return err
		}
	}
	completeHeld := func(res *idemv1.Result, ret *durationpb.Duration) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: testNS, Key: "held", Token: token, Result: res, Retention: ret})
			return err
		}
	}
	checkpoint := func(tok uint64, phase string, data []byte) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := e.idem.Checkpoint(ctx, &idemv1.CheckpointRequest{Namespace: testNS, Key: "held", Token: tok, Phase: phase, Data: data}, wire)
			return err
		}
	}
	extend := func(d time.Duration) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := e.idem.ExtendLease(ctx, &idemv1.ExtendLeaseRequest{Namespace: testNS, Key: "held", Token: token, LeaseTtl: durationpb.New(d)})
			return err
		}
	}
	dur := durationpb.New
	over := func(r *idemv1.Result, extra func(*idemv1.Result)) *idemv1.Result { extra(r); return r }
	cases := []limitCase{
		// key: 1–256 bytes of printable UTF-8, counted in bytes.
		{"256-byte key", reserve(func(r *idemv1.ReserveRequest) { r.Key = strings.Repeat("k", 256) }), nil},
		{"1-byte key", reserve(func(r *idemv1.ReserveRequest) { r.Key = "k" }), nil},
		{"256-byte key of 2-byte runes", reserve(func(r *idemv1.ReserveRequest) { r.Key = strings.Repeat("é", 128) }), nil},
		{"257-byte key of 2-byte runes", reserveHeld(func(r *idemv1.ReserveRequest) { r.Key = strings.Repeat("é", 128) + "k" }), []string{"key"}},
		{"printable non-ASCII and space in key", reserve(func(r *idemv1.ReserveRequest) { r.Key = "ключ 1 ✓" }), nil},
		{"DEL in key", reserveHeld(func(r *idemv1.ReserveRequest) { r.Key = "held\x7f" }), []string{"key"}},
		{"NUL in key", reserveHeld(func(r *idemv1.ReserveRequest) { r.Key = "held\x00" }), []string{"key"}},
		{"tab in key", reserveHeld(func(r *idemv1.ReserveRequest) { r.Key = "he\tld" }), []string{"key"}},
		{"C1 control in key", reserveHeld(func(r *idemv1.ReserveRequest) { r.Key = "held\u0085" }), []string{"key"}},
		{"zero-width space in key", reserveHeld(func(r *idemv1.ReserveRequest) { r.Key = "held\u200b" }), []string{"key"}},
		{"truncated rune in key on the wire", func(ctx context.Context) error {
			_, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "held\xe2\x82"}, wire)
			return err
		}, []string{"key"}},
		// namespace: required, ≤ 256 bytes, printable.
		{"256-byte namespace", reserve(func(r *idemv1.ReserveRequest) { r.Namespace = strings.Repeat("n", 256) }), nil},
		{"257-byte namespace", reserveHeld(func(r *idemv1.ReserveRequest) { r.Namespace = strings.Repeat("n", 257) }), []string{"namespace"}},
		{"control character in namespace", reserveHeld(func(r *idemv1.ReserveRequest) { r.Namespace = testNS + "\n" }), []string{"namespace"}},
		// tenant: ≤ 128 bytes, printable, empty is "default".
		{"128-byte tenant", reserve(func(r *idemv1.ReserveRequest) { r.Tenant = strings.Repeat("t", 128) }), nil},
		{"control character in tenant", reserveHeld(func(r *idemv1.ReserveRequest) { r.Tenant = "acme\x1b" }), []string{"tenant"}},
		// fingerprint: ≤ 64 bytes.
		{"64-byte fingerprint", reserve(func(r *idemv1.ReserveRequest) { r.Fingerprint = bytes.Repeat([]byte{0xff}, 64) }), nil},
		// lease: 1s–1h.
		{"1s lease", reserve(func(r *idemv1.ReserveRequest) { r.LeaseTtl = dur(time.Second) }), nil},
		{"1h lease", reserve(func(r *idemv1.ReserveRequest) { r.LeaseTtl = dur(time.Hour) }), nil},
		{"lease 1ns under 1s", reserveHeld(func(r *idemv1.ReserveRequest) { r.LeaseTtl = dur(time.Second - 1) }), []string{"lease_ttl"}},
		{"lease 1ns over 1h", reserveHeld(func(r *idemv1.ReserveRequest) { r.LeaseTtl = dur(time.Hour + 1) }), []string{"lease_ttl"}},
		{"lease beyond the Duration range", reserveHeld(func(r *idemv1.ReserveRequest) { r.LeaseTtl = &durationpb.Duration{Seconds: 1 << 62} }), []string{"lease_ttl"}},
		// retention: 1s–30d.
		{"1s retention", reserve(func(r *idemv1.ReserveRequest) { r.Retention = dur(time.Second) }), nil},
		{"30d retention", reserve(func(r *idemv1.ReserveRequest) { r.Retention = dur(30 * 24 * time.Hour) }), nil},
		{"retention 1ns under 1s", reserveHeld(func(r *idemv1.ReserveRequest) { r.Retention = dur(time.Second - 1) }), []string{"retention"}},
		{"retention 1ns over 30d", reserveHeld(func(r *idemv1.ReserveRequest) { r.Retention = dur(30*24*time.Hour + 1) }), []string{"retention"}},
		// wait: ≤ 30s (0 means no wait).
		{"30s wait", reserve(func(r *idemv1.ReserveRequest) { r.Wait = dur(30 * time.Second) }), nil},
		{"1ns wait", reserve(func(r *idemv1.ReserveRequest) { r.Wait = dur(1) }), nil},
		{"wait 1ns over 30s", reserveHeld(func(r *idemv1.ReserveRequest) { r.Wait = dur(30*time.Second + 1) }), []string{"wait"}},
		{"malformed wait", reserveHeld(func(r *idemv1.ReserveRequest) { r.Wait = &durationpb.Duration{Seconds: -1, Nanos: 1} }), []string{"wait"}},
		// result: ≤ 1 MiB counting message, body, details and metadata.
		{"1 MiB result body", completeNew(&idemv1.Result{Body: make([]byte, mib)}, nil), nil},
		{"1 MiB result over every part", completeNew(resultOfSize(mib), nil), nil},
		{"result 1 byte over in message", completeHeld(over(resultOfSize(mib), func(r *idemv1.Result) { r.Message += "!" }), nil), []string{"result"}},
		{"result 1 byte over in a detail value", completeHeld(over(resultOfSize(mib), func(r *idemv1.Result) { r.Details[0].Value = append(r.Details[0].Value, 1) }), nil), []string{"result"}},
		{"result 1 byte over in a detail type URL", completeHeld(over(resultOfSize(mib), func(r *idemv1.Result) { r.Details[0].TypeUrl += "Z" }), nil), []string{"result"}},
		{"result 1 byte over in a metadata key", completeHeld(over(resultOfSize(mib), func(r *idemv1.Result) { r.Metadata["mkk"] = "" }), nil), []string{"result"}},
		{"result over in many details", completeHeld(&idemv1.Result{Details: slices.Repeat([]*anypb.Any{{TypeUrl: "t", Value: make([]byte, 1<<10)}}, 1<<10)}, nil), []string{"result"}},
		// An entry counts at least minEntryBytes, so empty ones cannot
		// pile up past the limit while counting nothing.
		{"empty details at the floor", completeNew(&idemv1.Result{Details: emptyDetails(mib / 8)}, nil), nil},
		{"empty details 1 over the floor", completeHeld(&idemv1.Result{Details: emptyDetails(mib/8 + 1)}, nil), []string{"result"}},
		{"short metadata entries over the floor", completeHeld(&idemv1.Result{Metadata: shortMetadata(mib/8 + 1)}, nil), []string{"result"}},
		{"result over and bad UTF-8 both named", func(ctx context.Context) error {
			_, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: testNS, Key: "held", Token: token,
				Result: &idemv1.Result{Message: "\xff", Body: make([]byte, mib)}}, wire)
			return err
		}, []string{"result", "result.message"}},
		// Complete: retention 1s–30d, token required.
		{"complete with 30d retention", completeNew(nil, dur(30*24*time.Hour)), nil},
		{"complete with 1s retention", completeNew(nil, dur(time.Second)), nil},
		{"complete with retention under 1s", completeHeld(nil, dur(time.Second-1)), []string{"retention"}},
		{"complete with negative retention", completeHeld(nil, dur(-time.Second)), []string{"retention"}},
		// ExtendLease: 1s–1h.
		{"extend to 1h", extend(time.Hour), nil},
		{"extend to 1s", extend(time.Second), nil},
		{"extend under 1s", extend(time.Second - 1), []string{"lease_ttl"}},
		{"extend negative", extend(-time.Second), []string{"lease_ttl"}},
		// Checkpoint: token required, phase ≤ 256 bytes printable, data ≤ 1 MiB.
		{"checkpoint with token 0", checkpoint(0, "p", nil), []string{"token"}},
		{"checkpoint at every limit", checkpoint(token, strings.Repeat("p", 256), make([]byte, mib)), nil},
		{"checkpoint with 1 MiB + 1 data", checkpoint(token, "p", make([]byte, mib+1)), []string{"data"}},
		{"checkpoint with 257-byte phase", checkpoint(token, strings.Repeat("p", 257), nil), []string{"phase"}},
		{"checkpoint with a control character in phase", checkpoint(token, "ph\x00ase", nil), []string{"phase"}},
		// Lookup checks what Reserve checks.
		{"lookup with 257-byte key", func(ctx context.Context) error {
			_, err := e.idem.Lookup(ctx, &idemv1.LookupRequest{Namespace: testNS, Key: strings.Repeat("k", 257)})
			return err
		}, []string{"key"}},
		{"lookup without namespace", func(ctx context.Context) error {
			_, err := e.idem.Lookup(ctx, &idemv1.LookupRequest{Key: "held"})
			return err
		}, []string{"namespace"}},
		{"release with a bad key and token 0", func(ctx context.Context) error {
			_, err := e.idem.Release(ctx, &idemv1.ReleaseRequest{Namespace: testNS, Key: "held\x01"})
			return err
		}, []string{"key", "token"}},
	}
	runLimitCases(t, e, [][2]string{{DefaultTenant, testNS}}, cases)

	// None of the rejected calls above touched the held record. A context
	// of its own: the cases (each with one) can outlast the first under
	// -race on a loaded machine.
	rec, err := e.store.Lookup(testContext(t), storageID("held"))
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != storage.StateInProgress || rec.Token != token || rec.Result != nil {
		t.Errorf("held record = %+v, want IN_PROGRESS with token %d and no result", rec, token)
	}
}

func TestBatchLimits(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	reserveItems := func(prefix string, n int) []*idemv1.BatchReserveRequest_Item {
		items := make([]*idemv1.BatchReserveRequest_Item, n)
		for i := range items {
			items[i] = &idemv1.BatchReserveRequest_Item{Key: fmt.Sprintf("%s%04d", prefix, i), Fingerprint: []byte("fp")}
		}
		return items
	}
	// 1,000 items pass, in one call, each answered in order.
	br, err := e.idem.BatchReserve(ctx, &idemv1.BatchReserveRequest{Namespace: testNS, Items: reserveItems("a", 1000)})
	if err != nil {
		t.Fatalf("BatchReserve(1000 items) error = %v", err)
	}
	if len(br.GetResults()) != 1000 {
		t.Fatalf("BatchReserve(1000 items) answered %d results", len(br.GetResults()))
	}
	citems := make([]*idemv1.BatchCompleteRequest_Item, 1000)
	for i, r := range br.GetResults() {
		if r.GetError() != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED || r.GetRecord().GetKey() != fmt.Sprintf("a%04d", i) {
			t.Fatalf("results[%d] = %v, want a%04d RESERVED", i, r, i)
		}
		citems[i] = &idemv1.BatchCompleteRequest_Item{Key: r.GetRecord().GetKey(), Token: r.GetRecord().GetToken(), Result: &idemv1.Result{Body: []byte{byte(i)}}}
	}
	bc, err := e.idem.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: testNS, Items: citems})
	if err != nil {
		t.Fatalf("BatchComplete(1000 items) error = %v", err)
	}
	for i, r := range bc.GetResults() {
		if r.GetError() != nil || r.GetRecord().GetState() != idemv1.RecordState_RECORD_STATE_COMPLETED {
			t.Fatalf("complete results[%d] = %v, want COMPLETED", i, r)
		}
	}

	// Records held for the per-item checks below.
	held, err := e.idem.BatchReserve(ctx, &idemv1.BatchReserveRequest{Namespace: testNS, Items: reserveItems("h", 4)})
	if err != nil {
		t.Fatal(err)
	}
	tok := func(i int) uint64 { return held.GetResults()[i].GetRecord().GetToken() }

	wire := grpc.ForceCodecV2(codec.Codec{})
	dur := durationpb.New
	cases := []limitCase{
		{"batch reserve with lease and retention out of range", func(ctx context.Context) error {
			_, err := e.idem.BatchReserve(ctx, &idemv1.BatchReserveRequest{Namespace: testNS, LeaseTtl: dur(time.Hour + 1), Retention: dur(time.Second - 1), Items: reserveItems("x", 2)})
			return err
		}, []string{"lease_ttl", "retention"}},
		{"batch reserve without namespace", func(ctx context.Context) error {
			_, err := e.idem.BatchReserve(ctx, &idemv1.BatchReserveRequest{Items: reserveItems("x", 2)})
			return err
		}, []string{"namespace"}},
		{"batch reserve with a 129-byte tenant and 1001 items", func(ctx context.Context) error {
			_, err := e.idem.BatchReserve(ctx, &idemv1.BatchReserveRequest{Tenant: strings.Repeat("t", 129), Namespace: testNS, Items: reserveItems("x", 1001)})
			return err
		}, []string{"tenant", "items"}},
		{"batch complete with retention over 30d", func(ctx context.Context) error {
			_, err := e.idem.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: testNS, Retention: dur(30*24*time.Hour + 1),
				Items: []*idemv1.BatchCompleteRequest_Item{{Key: "h0000", Token: tok(0)}}})
			return err
		}, []string{"retention"}},
		{"batch complete with an invalid UTF-8 namespace on the wire", func(ctx context.Context) error {
			_, err := e.idem.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: testNS + "\xff",
				Items: []*idemv1.BatchCompleteRequest_Item{{Key: "h0000", Token: tok(0)}}}, wire)
			return err
		}, []string{"namespace"}},
	}
	runLimitCases(t, e, [][2]string{{DefaultTenant, testNS}}, cases)

	// A bad item among good ones fails alone: every item kind of bad in
	// BatchComplete, the good ones complete and the bad ones stay held.
	before := e.snapshot(ctx, t, DefaultTenant, testNS)
	resp, err := e.idem.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: testNS, Items: []*idemv1.BatchCompleteRequest_Item{
		{Key: "h0000", Token: tok(0), Result: &idemv1.Result{Body: make([]byte, 1<<20+1)}},
		{Key: "h0001", Token: tok(1), Result: resultOfSize(1 << 20)},
		{Key: "h0002", Token: tok(2), Result: &idemv1.Result{Metadata: map[string]string{"k": "\xff"}}},
		{Key: "h0003", Token: tok(3), Result: &idemv1.Result{Details: []*anypb.Any{{TypeUrl: "\xc0"}}}},
		{Key: strings.Repeat("k", 257), Token: 1},
	}}, wire)
	if err != nil {
		t.Fatalf("BatchComplete() error = %v", err)
	}
	res := resp.GetResults()
	if len(res) != 5 {
		t.Fatalf("BatchComplete() answered %d results, want 5", len(res))
	}
	wantItemInvalid(t, 0, res[0].GetError(), "items[0].result")
	if res[1].GetError() != nil || res[1].GetRecord().GetState() != idemv1.RecordState_RECORD_STATE_COMPLETED {
		t.Errorf("results[1] = %v, want COMPLETED with a 1 MiB result", res[1])
	}
	wantItemInvalid(t, 2, res[2].GetError(), `items[2].result.metadata["k"]`)
	wantItemInvalid(t, 3, res[3].GetError(), "items[3].result.details[0].type_url")
	wantItemInvalid(t, 4, res[4].GetError(), "items[4].key")
	after := e.snapshot(ctx, t, DefaultTenant, testNS)
	changed := map[string]bool{}
	for i := range after {
		if i < len(before) && !reflect.DeepEqual(before[i], after[i]) {
			changed[after[i].Key] = true
		}
	}
	if len(before) != len(after) || len(changed) != 1 || !changed["h0001"] {
		t.Errorf("records changed %v (had %d, have %d), want only h0001", changed, len(before), len(after))
	}

	// The same in BatchReserve: a 64-byte fingerprint passes, 65 fails alone.
	rresp, err := e.idem.BatchReserve(ctx, &idemv1.BatchReserveRequest{Namespace: testNS, Items: []*idemv1.BatchReserveRequest_Item{
		{Key: "f64", Fingerprint: make([]byte, 64)},
		{Key: "f65", Fingerprint: make([]byte, 65)},
		{Key: "ctl\x1f"},
		{Key: ""},
	}})
	if err != nil {
		t.Fatalf("BatchReserve() error = %v", err)
	}
	rres := rresp.GetResults()
	if rres[0].GetError() != nil || rres[0].GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
		t.Errorf("results[0] = %v, want RESERVED", rres[0])
	}
	wantItemInvalid(t, 1, rres[1].GetError(), "items[1].fingerprint")
	wantItemInvalid(t, 2, rres[2].GetError(), "items[2].key")
	wantItemInvalid(t, 3, rres[3].GetError(), "items[3].key")
	if _, err := e.store.Lookup(ctx, storageID("f65")); err == nil {
		t.Error("f65 was stored, want the bad item left out")
	}
}

func TestAdminLimits(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	for i := range 3 {
		if _, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: fmt.Sprintf("key-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	list := func(r *idemv1.ListKeysRequest) func(context.Context) error {
		return func(ctx context.Context) error {
			if r.Namespace == "" && r.Tenant == "" {
				r.Namespace = testNS
			}
			_, err := e.admin.ListKeys(ctx, r)
			return err
		}
	}
	del := func(r *idemv1.DeleteKeyRequest) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := e.admin.DeleteKey(ctx, r)
			return err
		}
	}
	force := func(r *idemv1.ForceReleaseRequest) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := e.admin.ForceRelease(ctx, r)
			return err
		}
	}
	stats := func(r *idemv1.StatsRequest) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := e.admin.Stats(ctx, r)
			return err
		}
	}
	cases := []limitCase{
		{"list page size 1000", list(&idemv1.ListKeysRequest{PageSize: 1000}), nil},
		{"list page size 1", list(&idemv1.ListKeysRequest{PageSize: 1}), nil},
		{"list page size 1001", list(&idemv1.ListKeysRequest{PageSize: 1001}), []string{"page_size"}},
		{"list negative page size", list(&idemv1.ListKeysRequest{PageSize: -1}), []string{"page_size"}},
		{"list 256-byte key prefix", list(&idemv1.ListKeysRequest{KeyPrefix: strings.Repeat("k", 256)}), nil},
		{"list 257-byte key prefix", list(&idemv1.ListKeysRequest{KeyPrefix: strings.Repeat("k", 257)}), []string{"key_prefix"}},
		{"list key prefix with a control character", list(&idemv1.ListKeysRequest{KeyPrefix: "key\x00"}), []string{"key_prefix"}},
		{"list without namespace", list(&idemv1.ListKeysRequest{Tenant: "acme"}), []string{"namespace"}},
		{"list page token of another prefix", list(&idemv1.ListKeysRequest{PageToken: "a2V5LTA"}), []string{"page_token"}},
		{"list page token of a real key", list(&idemv1.ListKeysRequest{PageToken: encodePageToken("key-0")}), nil},
		// A forged token must not carry what no key may hold to the store
		// (PostgreSQL answers invalid UTF-8 or NUL in TEXT with an error).
		{"list page token holding invalid UTF-8", list(&idemv1.ListKeysRequest{PageToken: encodePageToken("key-\xff")}), []string{"page_token"}},
		{"list page token holding NUL", list(&idemv1.ListKeysRequest{PageToken: encodePageToken("key\x00")}), []string{"page_token"}},
		{"list page token holding a 257-byte key", list(&idemv1.ListKeysRequest{PageToken: encodePageToken(strings.Repeat("k", 257))}), []string{"page_token"}},
		{"delete with empty key", del(&idemv1.DeleteKeyRequest{Namespace: testNS}), []string{"key"}},
		{"delete with 257-byte key", del(&idemv1.DeleteKeyRequest{Namespace: testNS, Key: strings.Repeat("k", 257)}), []string{"key"}},
		{"delete without namespace", del(&idemv1.DeleteKeyRequest{Key: "key-0"}), []string{"namespace"}},
		{"delete with a key that differs by a control character", del(&idemv1.DeleteKeyRequest{Namespace: testNS, Key: "key-0\x00"}), []string{"key"}},
		{"force release with 129-byte tenant", force(&idemv1.ForceReleaseRequest{Tenant: strings.Repeat("t", 129), Namespace: testNS, Key: "key-0"}), []string{"tenant"}},
		{"force release with empty key", force(&idemv1.ForceReleaseRequest{Namespace: testNS}), []string{"key"}},
		{"stats of every namespace", stats(&idemv1.StatsRequest{}), nil},
		{"stats with 257-byte namespace", stats(&idemv1.StatsRequest{Namespace: strings.Repeat("n", 257)}), []string{"namespace"}},
		{"stats with a control character in tenant", stats(&idemv1.StatsRequest{Tenant: "a\tb"}), []string{"tenant"}},
	}
	runLimitCases(t, e, [][2]string{{DefaultTenant, testNS}}, cases)
	if recs := e.snapshot(ctx, t, DefaultTenant, testNS); len(recs) != 3 {
		t.Errorf("%d records left, want the 3 reserved", len(recs))
	}
}

// TestNamespacePolicyLimits: a namespace's policy narrows the limits for
// every call that takes them, with the same boundaries.
func TestNamespacePolicyLimits(t *testing.T) {
	const ns = "short"
	e := newEnv(t, WithNamespacePolicies(map[string]Policy{
		ns: {MaxLease: 10 * time.Second, MaxRetention: time.Hour, MaxResultSize: 4, StoreResults: true},
	}))
	ctx := testContext(t)
	held, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: ns, Key: "held"})
	if err != nil {
		t.Fatal(err)
	}
	token := held.GetRecord().GetToken()
	n := 0
	reserve := func(lease, ret time.Duration) func(context.Context) error {
		return func(ctx context.Context) error {
			n++
			_, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: ns, Key: fmt.Sprintf("r%d", n), LeaseTtl: durationpb.New(lease), Retention: durationpb.New(ret)})
			return err
		}
	}
	complete := func(body string, ret time.Duration) func(context.Context) error {
		return func(ctx context.Context) error {
			n++
			k := fmt.Sprintf("c%d", n)
			r, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: ns, Key: k})
			if err != nil {
				return err
			}
			_, err = e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: ns, Key: k, Token: r.GetRecord().GetToken(), Result: &idemv1.Result{Body: []byte(body)}, Retention: durationpb.New(ret)})
			return err
		}
	}
	completeHeld := func(body string, ret time.Duration) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: ns, Key: "held", Token: token, Result: &idemv1.Result{Body: []byte(body)}, Retention: durationpb.New(ret)})
			return err
		}
	}
	cases := []limitCase{
		{"lease at the namespace max", reserve(10*time.Second, time.Hour), nil},
		{"lease 1ns over the namespace max", reserve(10*time.Second+1, 0), []string{"lease_ttl"}},
		{"retention 1ns over the namespace max", reserve(0, time.Hour+1), []string{"retention"}},
		{"result at the namespace max", complete("1234", time.Hour), nil},
		{"result over the namespace max", completeHeld("12345", 0), []string{"result"}},
		{"complete retention over the namespace max", completeHeld("", time.Hour+1), []string{"retention"}},
		{"extend over the namespace max", func(ctx context.Context) error {
			_, err := e.idem.ExtendLease(ctx, &idemv1.ExtendLeaseRequest{Namespace: ns, Key: "held", Token: token, LeaseTtl: durationpb.New(11 * time.Second)})
			return err
		}, []string{"lease_ttl"}},
		{"extend at the namespace max", func(ctx context.Context) error {
			_, err := e.idem.ExtendLease(ctx, &idemv1.ExtendLeaseRequest{Namespace: ns, Key: "held", Token: token, LeaseTtl: durationpb.New(10 * time.Second)})
			return err
		}, nil},
		{"checkpoint data over the namespace max", func(ctx context.Context) error {
			_, err := e.idem.Checkpoint(ctx, &idemv1.CheckpointRequest{Namespace: ns, Key: "held", Token: token, Data: []byte("12345")})
			return err
		}, []string{"data"}},
		{"batch reserve lease over the namespace max", func(ctx context.Context) error {
			_, err := e.idem.BatchReserve(ctx, &idemv1.BatchReserveRequest{Namespace: ns, LeaseTtl: durationpb.New(time.Minute), Items: []*idemv1.BatchReserveRequest_Item{{Key: "b"}}})
			return err
		}, []string{"lease_ttl"}},
		{"batch complete retention over the namespace max", func(ctx context.Context) error {
			_, err := e.idem.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: ns, Retention: durationpb.New(2 * time.Hour), Items: []*idemv1.BatchCompleteRequest_Item{{Key: "held", Token: token}}})
			return err
		}, []string{"retention"}},
		// Another namespace keeps the server's limits.
		{"lease over the namespace max elsewhere", func(ctx context.Context) error {
			_, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "k", LeaseTtl: durationpb.New(time.Hour)})
			return err
		}, nil},
	}
	runLimitCases(t, e, [][2]string{{DefaultTenant, ns}}, cases)

	// A batch item over the namespace's result size fails alone.
	resp, err := e.idem.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: ns, Items: []*idemv1.BatchCompleteRequest_Item{
		{Key: "held", Token: token, Result: &idemv1.Result{Body: []byte("12345")}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	wantItemInvalid(t, 0, resp.GetResults()[0].GetError(), "items[0].result")
	rec, err := e.store.Lookup(ctx, storage.ID{Tenant: DefaultTenant, Namespace: ns, Key: "held"})
	if err != nil || rec.State != storage.StateInProgress {
		t.Errorf("held = %+v, %v, want still IN_PROGRESS", rec, err)
	}
}

// TestEmptyDetailsCountInNamespaceLimit: a namespace capped at 4-byte
// results must not store a hundred thousand empty details.
func TestEmptyDetailsCountInNamespaceLimit(t *testing.T) {
	e := newEnv(t, WithNamespacePolicies(map[string]Policy{"tiny": {MaxResultSize: 4, StoreResults: true}}))
	ctx := testContext(t)
	if _, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "tiny", Key: "k"}); err != nil {
		t.Fatal(err)
	}
	_, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: "tiny", Key: "k", Token: 1, Result: &idemv1.Result{Details: emptyDetails(100_000)}})
	wantInvalid(t, err, "result")
	rec, err := e.store.Lookup(ctx, storage.ID{Tenant: DefaultTenant, Namespace: "tiny", Key: "k"})
	if err != nil || rec.State != storage.StateInProgress || rec.Result != nil {
		t.Errorf("record = %+v, %v, want still IN_PROGRESS without a result", rec, err)
	}
}

// TestBadTenantStillChecksNamespacePolicy: a malformed tenant must not hide
// the fields over the namespace's own limits; the BadRequest names them
// all, so the caller does not learn them one round trip at a time.
func TestBadTenantStillChecksNamespacePolicy(t *testing.T) {
	const ns = "short"
	e := newEnv(t, WithNamespacePolicies(map[string]Policy{
		ns:      {MaxLease: 10 * time.Second, MaxRetention: time.Hour, MaxResultSize: 4, StoreResults: true},
		"codes": {MaxResultSize: 4, StoreResults: false},
	}))
	const bad = "t\x00"
	cases := []limitCase{
		{"reserve", func(ctx context.Context) error {
			_, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Tenant: bad, Namespace: ns, Key: "k", LeaseTtl: durationpb.New(time.Minute), Retention: durationpb.New(2 * time.Hour)})
			return err
		}, []string{"tenant", "lease_ttl", "retention"}},
		{"complete", func(ctx context.Context) error {
			_, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Tenant: bad, Namespace: ns, Key: "k", Token: 1, Result: &idemv1.Result{Body: []byte("12345")}})
			return err
		}, []string{"tenant", "result"}},
		{"checkpoint", func(ctx context.Context) error {
			_, err := e.idem.Checkpoint(ctx, &idemv1.CheckpointRequest{Tenant: bad, Namespace: ns, Key: "k", Token: 1, Data: []byte("12345")})
			return err
		}, []string{"tenant", "data"}},
		{"batch reserve", func(ctx context.Context) error {
			_, err := e.idem.BatchReserve(ctx, &idemv1.BatchReserveRequest{Tenant: bad, Namespace: ns, LeaseTtl: durationpb.New(time.Minute), Items: []*idemv1.BatchReserveRequest_Item{{Key: "b"}}})
			return err
		}, []string{"tenant", "lease_ttl"}},
		// A codes-only namespace drops the message (not UTF-8 here, sent
		// with idem's codec, which does not check): it is no bad field.
		{"complete in a codes-only namespace", func(ctx context.Context) error {
			_, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Tenant: bad, Namespace: "codes", Key: "k", Token: 1, Result: &idemv1.Result{Message: "\xff"}},
				grpc.ForceCodecV2(codec.Codec{}))
			return err
		}, []string{"tenant"}},
	}
	runLimitCases(t, e, [][2]string{{DefaultTenant, ns}, {DefaultTenant, "codes"}}, cases)
}
