package server

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jonboulle/clockwork"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/storage/memory"
)

// The fuzz targets below call the Service's handlers in process, with
// strings no wire would carry (invalid UTF-8), and hold the answers to an
// oracle written from the design contract rather than from validate.go:
// a request is accepted exactly when every field is within its limits,
// and a rejected one is INVALID_ARGUMENT with a BadRequest naming every bad
// field and no other.

// fuzzService is a Service over a memory store on a fake clock that never
// moves, so records never expire and lease arithmetic is exact.
func fuzzService(f *testing.F) (*Service, time.Time) {
	f.Helper()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := clockwork.NewFakeClockAt(now)
	mem := memory.New(memory.WithClock(clock), memory.WithSweepInterval(0))
	svc, err := New(mem, WithClock(clock), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		f.Fatalf("New() error = %v", err)
	}
	f.Cleanup(func() {
		svc.Close()
		mem.Close()
	})
	return svc, now
}

// oracle checks fields against the default limits of the design contract.
type oracle map[string]bool // bad fields

func (o oracle) text(field, s string, maxBytes int, required bool) {
	switch {
	case s == "":
		if required {
			o[field] = true
		}
	case len(s) > maxBytes, !utf8.ValidString(s):
		o[field] = true
	default:
		for _, r := range s {
			if !unicode.IsPrint(r) {
				o[field] = true
			}
		}
	}
}

// duration: absent or zero means the default; otherwise a well-formed
// duration within [lo, hi].
func (o oracle) duration(field string, d *durationpb.Duration, lo, hi time.Duration) {
	if d == nil || d.Seconds == 0 && d.Nanos == 0 {
		return
	}
	const maxSeconds = 315576000000 // ±10,000 years, google.protobuf.Duration's range
	sec, nanos := d.Seconds, d.Nanos
	if sec < -maxSeconds || sec > maxSeconds || nanos <= -1e9 || nanos >= 1e9 || sec > 0 && nanos < 0 || sec < 0 && nanos > 0 {
		o[field] = true
		return
	}
	// Compare in seconds first, so huge values cannot overflow.
	if sec < int64(lo/time.Second)-1 || sec > int64(hi/time.Second)+1 {
		o[field] = true
		return
	}
	got := time.Duration(sec)*time.Second + time.Duration(nanos)
	if got < lo || got > hi {
		o[field] = true
	}
}

func (o oracle) fields() []string {
	var out []string
	for f := range o {
		out = append(out, f)
	}
	slices.Sort(out)
	return out
}

// checkRejection fails unless err is INVALID_ARGUMENT whose BadRequest
// names exactly the fields bad names.
func checkRejection(t *testing.T, call string, err error, bad oracle) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.InvalidArgument {
		t.Fatalf("%s error = %v, want INVALID_ARGUMENT naming %v", call, err, bad.fields())
	}
	var named []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				if !slices.Contains(named, v.GetField()) {
					named = append(named, v.GetField())
				}
			}
		}
	}
	slices.Sort(named)
	if !slices.Equal(named, bad.fields()) {
		t.Fatalf("%s BadRequest names %v, want %v (error %v)", call, named, bad.fields(), err)
	}
}

func optDuration(sec int64, nanos int32) *durationpb.Duration {
	if sec == 0 && nanos == 0 {
		return nil
	}
	return &durationpb.Duration{Seconds: sec, Nanos: nanos}
}

func FuzzReserveValidation(f *testing.F) {
	f.Add("", "ns", "key", []byte("fp"), int64(30), int32(0), int64(3600), int32(0), int64(0), int32(0))
	f.Add("acme", "/payments.v1.Payments/Charge", "order-1", []byte{}, int64(0), int32(0), int64(0), int32(0), int64(1), int32(0))
	f.Add("t", "", "k\x00", make([]byte, 65), int64(-1), int32(0), int64(0), int32(999999999), int64(31), int32(0))
	f.Add("ténant", "ns", "ключ", []byte("fp"), int64(3600), int32(1), int64(2592000), int32(0), int64(0), int32(-5))
	f.Add("\xff", "ns\u200b", "k", []byte("fp"), int64(1), int32(-1), int64(1<<62), int32(0), int64(-1), int32(-1))
	svc, now := fuzzService(f)
	l := DefaultLimits()
	f.Fuzz(func(t *testing.T, tenant, ns, key string, fp []byte, leaseS int64, leaseN int32, retS int64, retN int32, waitS int64, waitN int32) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req := &idemv1.ReserveRequest{
			Tenant: tenant, Namespace: ns, Key: key, Fingerprint: fp,
			LeaseTtl: optDuration(leaseS, leaseN), Retention: optDuration(retS, retN), Wait: optDuration(waitS, waitN),
		}
		bad := oracle{}
		bad.text("tenant", tenant, l.MaxTenantBytes, false)
		bad.text("namespace", ns, l.MaxNamespaceBytes, true)
		bad.text("key", key, l.MaxKeyBytes, true)
		if len(fp) > l.MaxFingerprintBytes {
			bad["fingerprint"] = true
		}
		bad.duration("lease_ttl", req.LeaseTtl, l.MinLease, l.MaxLease)
		bad.duration("retention", req.Retention, l.MinRetention, l.MaxRetention)
		bad.duration("wait", req.Wait, 0, l.MaxWait)

		resp, err := svc.Reserve(ctx, req)
		if len(bad) > 0 {
			checkRejection(t, "Reserve()", err, bad)
		} else if err != nil {
			t.Fatalf("Reserve() of a valid request error = %v, want nil", err)
		}

		// Lookup checks the same tenant, namespace and key.
		lbad := oracle{}
		for _, fld := range []string{"tenant", "namespace", "key"} {
			if bad[fld] {
				lbad[fld] = true
			}
		}
		_, lerr := svc.Lookup(ctx, &idemv1.LookupRequest{Tenant: tenant, Namespace: ns, Key: key})
		if len(lbad) > 0 {
			checkRejection(t, "Lookup()", lerr, lbad)
		} else if lerr != nil && len(bad) == 0 {
			t.Fatalf("Lookup() after an accepted Reserve error = %v, want nil", lerr)
		}
		if err != nil {
			return
		}

		// Accepted: the record is the one asked for, with the durations asked for.
		rec := resp.GetRecord()
		wantTenant := tenant
		if wantTenant == "" {
			wantTenant = DefaultTenant
		}
		if rec.GetTenant() != wantTenant || rec.GetNamespace() != ns || rec.GetKey() != key {
			t.Fatalf("Reserve() record is (%q, %q, %q), want (%q, %q, %q)", rec.GetTenant(), rec.GetNamespace(), rec.GetKey(), wantTenant, ns, key)
		}
		out := resp.GetOutcome()
		if out == idemv1.ReserveOutcome_RESERVE_OUTCOME_UNSPECIFIED {
			t.Fatal("Reserve() outcome is UNSPECIFIED")
		}
		if out != idemv1.ReserveOutcome_RESERVE_OUTCOME_MISMATCH && !bytes.Equal(rec.GetFingerprint(), fp) {
			t.Fatalf("Reserve() %v record fingerprint = %x, want %x", out, rec.GetFingerprint(), fp)
		}
		if out != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
			return
		}
		lease, ret := l.DefaultLease, l.DefaultRetention
		if req.LeaseTtl != nil {
			lease = req.LeaseTtl.AsDuration()
		}
		if req.Retention != nil {
			ret = req.Retention.AsDuration()
		}
		if got := rec.GetLeaseExpiresAt().AsTime(); !got.Equal(now.Add(lease)) {
			t.Fatalf("Reserve() lease_expires_at = %v, want now + %v", got, lease)
		}
		if rec.GetAttempts() == 1 {
			if got := rec.GetExpiresAt().AsTime(); !got.Equal(now.Add(max(lease, ret))) {
				t.Fatalf("Reserve() expires_at = %v, want now + %v", got, max(lease, ret))
			}
		}
		// Leave nothing in progress, so a later Reserve with wait never waits.
		if _, err := svc.Release(ctx, &idemv1.ReleaseRequest{Tenant: tenant, Namespace: ns, Key: key, Token: rec.GetToken()}); err != nil {
			t.Fatalf("Release() of the token just reserved error = %v", err)
		}
	})
}

func FuzzCompleteValidation(f *testing.F) {
	f.Add("", "ns", "key", uint64(1), int32(0), "ok", []byte("body"), int64(3600), int32(0), true)
	f.Add("t", "ns", "", uint64(0), int32(5), "", []byte{}, int64(0), int32(0), false)
	f.Add("t", "n\ts", "k", uint64(7), int32(-1), "\xff", make([]byte, 1<<10), int64(-3), int32(0), true)
	f.Add("t", "ns", "k", uint64(1), int32(16), "msg", []byte("b"), int64(2592001), int32(0), true)
	svc, _ := fuzzService(f)
	l := DefaultLimits()
	f.Fuzz(func(t *testing.T, tenant, ns, key string, token uint64, code int32, msg string, body []byte, retS int64, retN int32, reserveFirst bool) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if reserveFirst {
			// Put a record there when the key is valid, so Complete has
			// something to complete; its token is what Complete then uses
			// half the time.
			r, err := svc.Reserve(ctx, &idemv1.ReserveRequest{Tenant: tenant, Namespace: ns, Key: key, Fingerprint: []byte("f")})
			if err == nil && r.GetOutcome() == idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED && token%2 == 0 {
				token = r.GetRecord().GetToken()
			}
		}
		req := &idemv1.CompleteRequest{
			Tenant: tenant, Namespace: ns, Key: key, Token: token,
			Result:    &idemv1.Result{Code: code, Message: msg, Body: body},
			Retention: optDuration(retS, retN),
		}
		bad := oracle{}
		bad.text("tenant", tenant, l.MaxTenantBytes, false)
		bad.text("namespace", ns, l.MaxNamespaceBytes, true)
		bad.text("key", key, l.MaxKeyBytes, true)
		if token == 0 {
			bad["token"] = true
		}
		if len(msg)+len(body) > l.MaxResultBytes {
			bad["result"] = true
		}
		if !utf8.ValidString(msg) {
			bad["result.message"] = true
		}
		bad.duration("retention", req.Retention, l.MinRetention, l.MaxRetention)

		resp, err := svc.Complete(ctx, req)
		if len(bad) > 0 {
			checkRejection(t, "Complete()", err, bad)
			return
		}
		switch st, _ := status.FromError(err); {
		case err == nil:
		case st.Code() == codes.NotFound, st.Code() == codes.FailedPrecondition:
			return // a valid request on a record it does not hold
		default:
			t.Fatalf("Complete() of a valid request error = %v, want nil, NOT_FOUND or FAILED_PRECONDITION", err)
		}
		rec := resp.GetRecord()
		if rec.GetState() != idemv1.RecordState_RECORD_STATE_COMPLETED || rec.GetToken() != token ||
			rec.GetResult().GetCode() != code || rec.GetResult().GetMessage() != msg || !bytes.Equal(rec.GetResult().GetBody(), body) {
			t.Fatalf("Complete() record = %v, want COMPLETED with token %d and the result sent", rec, token)
		}
	})
}
