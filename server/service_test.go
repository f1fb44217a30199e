package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/idemhq/idem"
	"github.com/idemhq/idem/internal/logthrottle"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/storage"
)

func storageID(key string) storage.ID {
	return storage.ID{Tenant: DefaultTenant, Namespace: testNS, Key: key}
}

func testResult() *idemv1.Result {
	return &idemv1.Result{
		Code:     5,
		Message:  "not found",
		Body:     []byte{0, 1, 2, 0xff},
		Details:  []*anypb.Any{{TypeUrl: "type.example.com/x.Y", Value: []byte{9, 8, 7}}, {TypeUrl: "t/empty"}},
		Metadata: map[string]string{"content-type": "application/grpc", "x": ""},
	}
}

func TestReserveCompleteReplaysResult(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	req := &idemv1.ReserveRequest{Namespace: testNS, Key: "order-1", Fingerprint: []byte("fp")}
	r1, err := e.idem.Reserve(ctx, req)
	if err != nil {
		t.Fatalf("Reserve() error = %v", err)
	}
	if got := r1.GetOutcome(); got != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
		t.Fatalf("Reserve() outcome = %v, want RESERVED", got)
	}
	if got := r1.GetRecord().GetToken(); got != 1 {
		t.Errorf("token = %d, want 1", got)
	}
	c, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: testNS, Key: "order-1", Token: 1, Result: testResult()})
	if err != nil {
		t.Fatalf("Complete() error = %v", err)
	}
	if !proto.Equal(c.GetRecord().GetResult(), testResult()) {
		t.Errorf("Complete() result = %v, want %v", c.GetRecord().GetResult(), testResult())
	}
	// Complete's own retry succeeds again.
	if _, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: testNS, Key: "order-1", Token: 1, Result: testResult()}); err != nil {
		t.Errorf("repeated Complete() error = %v, want success", err)
	}
	r2, err := e.idem.Reserve(ctx, req)
	if err != nil {
		t.Fatalf("second Reserve() error = %v", err)
	}
	if got := r2.GetOutcome(); got != idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED {
		t.Fatalf("second Reserve() outcome = %v, want COMPLETED", got)
	}
	if !proto.Equal(r2.GetRecord().GetResult(), testResult()) {
		t.Errorf("replayed result = %v, want %v byte for byte", r2.GetRecord().GetResult(), testResult())
	}
	l, err := e.idem.Lookup(ctx, &idemv1.LookupRequest{Namespace: testNS, Key: "order-1"})
	if err != nil || l.GetRecord().GetState() != idemv1.RecordState_RECORD_STATE_COMPLETED {
		t.Errorf("Lookup() = %v, %v, want COMPLETED", l, err)
	}
}

func TestMismatchDoesNotLeakResult(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	if _, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "k", Fingerprint: []byte("A")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: testNS, Key: "k", Token: 1, Result: &idemv1.Result{Body: []byte("secret")}}); err != nil {
		t.Fatal(err)
	}
	r, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "k", Fingerprint: []byte("B")})
	if err != nil {
		t.Fatalf("Reserve() error = %v", err)
	}
	if got := r.GetOutcome(); got != idemv1.ReserveOutcome_RESERVE_OUTCOME_MISMATCH {
		t.Fatalf("Reserve() outcome = %v, want MISMATCH", got)
	}
	if r.GetRecord() == nil || r.GetRecord().GetResult() != nil {
		t.Errorf("MISMATCH record = %v, want a record without result", r.GetRecord())
	}
	b, err := e.idem.BatchReserve(ctx, &idemv1.BatchReserveRequest{Namespace: testNS, Items: []*idemv1.BatchReserveRequest_Item{{Key: "k", Fingerprint: []byte("B")}}})
	if err != nil {
		t.Fatalf("BatchReserve() error = %v", err)
	}
	if res := b.GetResults()[0]; res.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_MISMATCH || res.GetRecord().GetResult() != nil {
		t.Errorf("BatchReserve() result = %v, want MISMATCH without result", res)
	}
}

func TestStoreErrorsMapToStatuses(t *testing.T) {
	tests := []struct {
		err       error
		code      codes.Code
		reason    string
		retry     bool
		wantInMsg string
	}{
		{fmt.Errorf("x: %w", idem.ErrNotFound), codes.NotFound, ReasonNotFound, false, "not found"},
		{fmt.Errorf("%w: token 1, record holds token 2", idem.ErrLeaseLost), codes.FailedPrecondition, ReasonLeaseLost, false, "lease lost"},
		{idem.ErrNotInProgress, codes.FailedPrecondition, ReasonNotInProgress, false, "not in progress"},
		{fmt.Errorf("%w: dial tcp 10.0.0.7:5432: refused", idem.ErrUnavailable), codes.Unavailable, ReasonUnavailable, true, "store unavailable"},
		{idem.ErrClosed, codes.Unavailable, ReasonClosed, true, "closed"},
		{idem.ErrResourceExhausted, codes.ResourceExhausted, ReasonResourceExhausted, true, "exhausted"},
		{idem.ErrPermissionDenied, codes.PermissionDenied, ReasonPermissionDenied, false, "permission"},
		{idem.ErrUnauthenticated, codes.Unauthenticated, ReasonUnauthenticated, false, "unauthenticated"},
		{fmt.Errorf("query: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "", false, "deadline"},
		{context.Canceled, codes.Canceled, "", false, "cancel"},
		{errBoom, codes.Internal, "", false, "idem: internal error"},
		// The caller learns which of its records is damaged and what to do;
		// the decoder's complaint (a path here) stays in the log.
		{storage.Damaged(storage.ID{Tenant: "t", Namespace: testNS, Key: "k"}, errors.New("pebble store at /secret_table: bad version")),
			codes.DataLoss, ReasonDamaged, false, `idem: stored record cannot be decoded: key "k" in namespace "` + testNS + `"; an admin DeleteKey removes it`},
	}
	e := newEnv(t)
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			ctx := testContext(t)
			e.store.setReserveErr(tt.err)
			defer e.store.setReserveErr(nil)
			_, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "k"})
			st := status.Convert(err)
			if st.Code() != tt.code {
				t.Fatalf("code = %v (%v), want %v", st.Code(), err, tt.code)
			}
			if !strings.Contains(st.Message(), tt.wantInMsg) {
				t.Errorf("message = %q, want it to contain %q", st.Message(), tt.wantInMsg)
			}
			for _, secret := range []string{"10.0.0.7", "secret_table", "pq:"} {
				if strings.Contains(st.Message(), secret) {
					t.Errorf("message = %q leaks %q", st.Message(), secret)
				}
			}
			ei := errorInfo(err)
			if got := ei.GetReason(); got != tt.reason {
				t.Errorf("ErrorInfo reason = %q, want %q", got, tt.reason)
			}
			if ei != nil && ei.GetDomain() != ErrorDomain {
				t.Errorf("ErrorInfo domain = %q, want %q", ei.GetDomain(), ErrorDomain)
			}
			if got := retryInfo(err) != nil; got != tt.retry {
				t.Errorf("has RetryInfo = %v, want %v", got, tt.retry)
			}
		})
	}
}

func TestStateErrorsThroughTheAPI(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	if _, err := e.idem.Lookup(ctx, &idemv1.LookupRequest{Namespace: testNS, Key: "absent"}); status.Code(err) != codes.NotFound {
		t.Errorf("Lookup(absent) = %v, want NotFound", err)
	}
	if _, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "k", LeaseTtl: durationpb.New(time.Second)}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Second)
	// Takeover: token 2; the old holder's calls now fail with LEASE_LOST.
	r, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "k"})
	if err != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED || r.GetRecord().GetToken() != 2 {
		t.Fatalf("takeover Reserve() = %v, %v, want RESERVED token 2", r, err)
	}
	for name, call := range map[string]func() error{
		"Complete": func() error {
			_, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: testNS, Key: "k", Token: 1})
			return err
		},
		"Release": func() error {
			_, err := e.idem.Release(ctx, &idemv1.ReleaseRequest{Namespace: testNS, Key: "k", Token: 1})
			return err
		},
		"ExtendLease": func() error {
			_, err := e.idem.ExtendLease(ctx, &idemv1.ExtendLeaseRequest{Namespace: testNS, Key: "k", Token: 1})
			return err
		},
		"Checkpoint": func() error {
			_, err := e.idem.Checkpoint(ctx, &idemv1.CheckpointRequest{Namespace: testNS, Key: "k", Token: 1, Phase: "charged"})
			return err
		},
	} {
		err := call()
		if status.Code(err) != codes.FailedPrecondition || errorInfo(err).GetReason() != ReasonLeaseLost {
			t.Errorf("stale %s() = %v, want FailedPrecondition LEASE_LOST", name, err)
		}
	}
	if _, err := e.idem.Checkpoint(ctx, &idemv1.CheckpointRequest{Namespace: testNS, Key: "k", Token: 2, Phase: "charged", Data: []byte{1}}); err != nil {
		t.Errorf("Checkpoint(token 2) error = %v", err)
	}
	if _, err := e.idem.ExtendLease(ctx, &idemv1.ExtendLeaseRequest{Namespace: testNS, Key: "k", Token: 2, LeaseTtl: durationpb.New(time.Minute)}); err != nil {
		t.Errorf("ExtendLease(token 2) error = %v", err)
	}
	if _, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: testNS, Key: "k", Token: 2}); err != nil {
		t.Fatalf("Complete(token 2) error = %v", err)
	}
	_, err = e.admin.ForceRelease(ctx, &idemv1.ForceReleaseRequest{Namespace: testNS, Key: "k"})
	if status.Code(err) != codes.FailedPrecondition || errorInfo(err).GetReason() != ReasonNotInProgress {
		t.Errorf("ForceRelease(completed) = %v, want FailedPrecondition NOT_IN_PROGRESS", err)
	}
}

func TestTenantFunc(t *testing.T) {
	e := newEnv(t, WithTenantFunc(func(_ context.Context, requested string) (string, error) {
		if requested == "other" {
			return "", fmt.Errorf("%w: caller may not act for tenant %q", idem.ErrPermissionDenied, requested)
		}
		return "acme", nil
	}))
	ctx := testContext(t)
	_, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Tenant: "other", Namespace: testNS, Key: "k"})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("Reserve(other tenant) = %v, want PermissionDenied", err)
	}
	r, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "k"})
	if err != nil || r.GetRecord().GetTenant() != "acme" {
		t.Errorf("Reserve() = %v, %v, want a record of tenant acme", r, err)
	}
}

func TestNamespacePolicies(t *testing.T) {
	e := newEnv(t, WithNamespacePolicies(map[string]Policy{
		"short": {DefaultLease: 5 * time.Second, MaxLease: 10 * time.Second, MaxRetention: time.Hour, MaxResultSize: 4, StoreResults: true},
		"codes": {StoreResults: false},
	}))
	ctx := testContext(t)
	_, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "short", Key: "k", LeaseTtl: durationpb.New(20 * time.Second), Retention: durationpb.New(2 * time.Hour)})
	if got := badFields(t, err); strings.Join(got, ",") != "lease_ttl,retention" {
		t.Errorf("BadRequest fields = %q, want lease_ttl and retention", got)
	}
	r, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "short", Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.GetRecord().GetLeaseExpiresAt().AsTime().Sub(r.GetRecord().GetCreatedAt().AsTime()); got != 5*time.Second {
		t.Errorf("lease = %v, want the namespace default 5s", got)
	}
	if got := r.GetRecord().GetExpiresAt().AsTime().Sub(r.GetRecord().GetCreatedAt().AsTime()); got != time.Hour {
		t.Errorf("retention = %v, want the namespace default capped at its max 1h", got)
	}
	_, err = e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: "short", Key: "k", Token: 1, Result: &idemv1.Result{Body: []byte("12345")}})
	if got := badFields(t, err); strings.Join(got, ",") != "result" {
		t.Errorf("Complete(5 bytes in a 4-byte namespace) fields = %q, want result", got)
	}

	if _, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "codes", Key: "k"}); err != nil {
		t.Fatal(err)
	}
	c, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: "codes", Key: "k", Token: 1, Result: &idemv1.Result{Code: 7, Body: []byte("body")}})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.GetRecord().GetResult(); got.GetCode() != 7 || len(got.GetBody()) != 0 {
		t.Errorf("stored result = %v, want code 7 and no body", got)
	}
}

// TestCodesOnlyNamespace: a namespace that keeps only result codes refuses
// no result for its size (nothing but the code is stored, and a refused
// Complete leaves the command to run again), and compares a repeated
// Complete by code alone.
func TestCodesOnlyNamespace(t *testing.T) {
	e := newEnv(t, WithNamespacePolicies(map[string]Policy{"codes": {StoreResults: false, MaxResultSize: 4}}))
	ctx := testContext(t)
	big := &idemv1.Result{Code: 5, Message: "not found", Body: []byte("a body over four bytes")}
	for _, k := range []string{"k", "b"} {
		if _, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "codes", Key: k}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2 { // the retry of an identical Complete succeeds too
		c, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: "codes", Key: "k", Token: 1, Result: big})
		if err != nil {
			t.Fatalf("Complete %d error = %v", i, err)
		}
		if got := c.GetRecord().GetResult(); got.GetCode() != 5 || got.GetMessage() != "" || len(got.GetBody()) != 0 {
			t.Errorf("stored result = %v, want code 5 alone", got)
		}
	}
	if _, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: "codes", Key: "k", Token: 1, Result: &idemv1.Result{Code: 5, Body: []byte("other")}}); err != nil {
		t.Errorf("Complete(same code, other body) error = %v, want success: only the code is compared", err)
	}
	_, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: "codes", Key: "k", Token: 1, Result: &idemv1.Result{Code: 6}})
	if status.Code(err) != codes.FailedPrecondition || errorInfo(err).GetReason() != ReasonLeaseLost {
		t.Errorf("Complete(other code) error = %v, want LEASE_LOST", err)
	}
	b, err := e.idem.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: "codes", Items: []*idemv1.BatchCompleteRequest_Item{{Key: "b", Token: 1, Result: big}}})
	if err != nil || b.GetResults()[0].GetError() != nil {
		t.Fatalf("BatchComplete = %v, %v; want the item completed", b, err)
	}
	if got := b.GetResults()[0].GetRecord().GetResult(); got.GetCode() != 5 || len(got.GetBody()) != 0 {
		t.Errorf("batch stored result = %v, want code 5 alone", got)
	}
}

func TestAdmin(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	for i := range 5 {
		if _, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: fmt.Sprintf("key-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	tok := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("ListKeys() does not terminate")
		}
		resp, err := e.admin.ListKeys(ctx, &idemv1.ListKeysRequest{Namespace: testNS, PageSize: 2, PageToken: tok})
		if err != nil {
			t.Fatalf("ListKeys() error = %v", err)
		}
		for _, r := range resp.GetRecords() {
			got = append(got, r.GetKey())
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
	}
	if want := "key-0,key-1,key-2,key-3,key-4"; strings.Join(got, ",") != want {
		t.Errorf("listed keys = %v, want %v", got, want)
	}
	if _, err := e.admin.ForceRelease(ctx, &idemv1.ForceReleaseRequest{Namespace: testNS, Key: "key-0"}); err != nil {
		t.Errorf("ForceRelease() error = %v", err)
	}
	d, err := e.admin.DeleteKey(ctx, &idemv1.DeleteKeyRequest{Namespace: testNS, Key: "key-1"})
	if err != nil || d.GetRecord().GetKey() != "key-1" {
		t.Errorf("DeleteKey() = %v, %v", d, err)
	}
	if _, err := e.admin.DeleteKey(ctx, &idemv1.DeleteKeyRequest{Namespace: testNS, Key: "key-1"}); status.Code(err) != codes.NotFound {
		t.Errorf("second DeleteKey() = %v, want NotFound", err)
	}
	st, err := e.admin.Stats(ctx, &idemv1.StatsRequest{})
	if err != nil {
		t.Fatalf("Stats() error = %v", err)
	}
	counts := map[idemv1.RecordState]int64{}
	for _, r := range st.GetRows() {
		counts[r.GetState()] += r.GetCount()
	}
	if counts[idemv1.RecordState_RECORD_STATE_IN_PROGRESS] != 3 || counts[idemv1.RecordState_RECORD_STATE_RELEASED] != 1 {
		t.Errorf("Stats() = %v, want 3 in progress and 1 released", st.GetRows())
	}
}

func TestHealthFollowsStorePing(t *testing.T) {
	hc := clockwork.NewFakeClock()
	e := newEnv(t, WithHealthCheck(time.Second, time.Second), WithHealthClock(hc))
	ctx := testContext(t)
	check := func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		r, err := e.health.Check(ctx, &healthpb.HealthCheckRequest{Service: "idem.v1.IdempotencyService"})
		if err != nil {
			t.Fatalf("Check() error = %v", err)
		}
		return r.GetStatus()
	}
	if got := check(); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("status = %v, want SERVING", got)
	}
	watch, err := e.health.Watch(ctx, &healthpb.HealthCheckRequest{Service: "idem.v1.IdempotencyService"})
	if err != nil {
		t.Fatal(err)
	}
	next := func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		r, err := watch.Recv()
		if err != nil {
			t.Fatalf("Watch() error = %v", err)
		}
		return r.GetStatus()
	}
	if got := next(); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watched status = %v, want SERVING", got)
	}
	e.store.setPingErr(fmt.Errorf("%w: disk gone", idem.ErrUnavailable))
	if err := hc.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	hc.Advance(time.Second)
	if got := next(); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("watched status after Ping failed = %v, want NOT_SERVING", got)
	}
	if got := check(); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("status = %v, want NOT_SERVING", got)
	}
	e.store.setPingErr(nil)
	hc.Advance(time.Second)
	if got := next(); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watched status after Ping recovered = %v, want SERVING", got)
	}
	e.svc.Close()
	if got := next(); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("watched status after Close = %v, want NOT_SERVING", got)
	}
}

func TestHealthNotServingAtStartWhenStoreIsDown(t *testing.T) {
	e := newEnv(t)
	e.store.setPingErr(errors.New("down"))
	e.svc.checkHealth()
	ctx := testContext(t)
	r, err := e.health.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("Check() = %v, %v, want NOT_SERVING", r, err)
	}
}

// listServices opens a reflection stream and asks it for the services.
func listServices(ctx context.Context, t *testing.T, e *testEnv) (reflectionpb.ServerReflection_ServerReflectionInfoClient, *reflectionpb.ServerReflectionResponse) {
	t.Helper()
	stream, err := reflectionpb.NewServerReflectionClient(e.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("reflection answer = %v", err)
	}
	return stream, resp
}

func TestReflectionListsServices(t *testing.T) {
	e := newEnv(t)
	stream, resp := listServices(testContext(t), t, e)
	stream.CloseSend()
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"idem.v1.IdempotencyService", "idem.v1.AdminService", "grpc.health.v1.Health"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Errorf("reflection services = %v, want %s", names, want)
		}
	}
}

// A reflection stream a tool keeps open ends at Close too, so it does not
// hold GracefulStop for the whole shutdown timeout.
func TestReflectionStreamEndsAtClose(t *testing.T) {
	e := newEnv(t)
	stream, _ := listServices(testContext(t), t, e)
	e.svc.Close()
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("reflection stream after Close = %v, want it to end with UNAVAILABLE", err)
	}
}

// TestHealthWatchEndsAtClose: a health Watch stream (a load balancer's)
// gets NOT_SERVING at Close and then ends, or GracefulStop would wait for
// it until the shutdown timeout and cut every other call off.
func TestHealthWatchEndsAtClose(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	w, err := e.health.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := w.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first Watch answer = %v, %v; want SERVING", r, err)
	}
	e.svc.Close()
	if r, err := w.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch answer after Close = %v, %v; want NOT_SERVING", r, err)
	}
	if _, err := w.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("Watch after NOT_SERVING = %v, want the stream to end with UNAVAILABLE", err)
	}
}

// A store outage makes every call fail; the log gets a few lines of each
// kind a second, and the next line written says how many were left out.
func TestStoreTroubleLinesAreThrottled(t *testing.T) {
	var buf syncBuffer
	e := newEnv(t, WithLogger(slog.New(slog.NewJSONHandler(&buf, nil))))
	ctx := testContext(t)
	e.store.setReserveErr(fmt.Errorf("%w: dial tcp 10.0.0.7:5432: refused", idem.ErrUnavailable))
	defer e.store.setReserveErr(nil)
	reserve := func(n int) {
		for range n {
			if _, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "k"}); status.Code(err) != codes.Unavailable {
				t.Fatalf("Reserve() = %v, want UNAVAILABLE", err)
			}
		}
	}
	reserve(50)
	e.clock.Advance(time.Second)
	reserve(1)
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		if m["msg"] == "store unavailable" {
			lines = append(lines, m)
		}
	}
	if want := logthrottle.DefaultBurst + 1; len(lines) != want {
		t.Fatalf("%d store-unavailable lines for 51 failed calls, want %d:\n%s", len(lines), want, buf.String())
	}
	if want := float64(50 - logthrottle.DefaultBurst); lines[len(lines)-1]["suppressed"] != want {
		t.Errorf("last line's suppressed = %v, want %v", lines[len(lines)-1]["suppressed"], want)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestCredentialTenantOverTheLimit: a tenant from the caller's credentials
// is held to the server's tenant limit as a requested one is; the store
// would otherwise keep records under a tenant the limits say cannot exist.
func TestCredentialTenantOverTheLimit(t *testing.T) {
	lim := DefaultLimits()
	lim.MaxTenantBytes = 8
	long := strings.Repeat("t", 9)
	e := newEnv(t, WithLimits(lim), WithTenantFunc(func(context.Context, string) (string, error) { return long, nil }))
	ctx := testContext(t)
	_, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: "k"})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "limit of 8") {
		t.Errorf("Reserve() with a 9-byte credential tenant = %v, want PermissionDenied naming the limit", err)
	}
	if _, err := e.store.Lookup(ctx, storage.ID{Tenant: long, Namespace: testNS, Key: "k"}); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("store Lookup() = %v, want ErrNotFound (nothing stored)", err)
	}
}
