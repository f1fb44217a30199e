package observe

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/server/auth"
	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/memory"
)

// logLines parses every JSON line of out.
func logLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, s := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, s)
		}
		lines = append(lines, m)
	}
	return lines
}

// loggedServer serves st through the call-logging interceptor until the
// test ends; buf gets the log lines.
func loggedServer(t *testing.T, st storage.Store) (idemv1.IdempotencyServiceClient, *syncBuffer) {
	t.Helper()
	svc, err := server.New(st, server.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	buf := &syncBuffer{}
	lis := listen(t)
	gs := server.NewGRPCServer(svc, grpc.ChainUnaryInterceptor(UnaryServerInterceptor(NewLogger(buf, slog.LevelInfo))))
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return idemv1.NewIdempotencyServiceClient(dialBuf(t, lis)), buf
}

// The answer of a Reserve is what an operator looks for first; the key,
// fingerprint and result never appear.
func TestCallLogOutcome(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	mem := memory.New()
	defer mem.Close()
	c, buf := loggedServer(t, mem)

	const key, fp, body = "raw-key-4711", "fingerprint-secret", "result-body-secret"
	reserve := func(fp string) {
		t.Helper()
		if _, err := c.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: key, Fingerprint: []byte(fp), LeaseTtl: durationpb.New(time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	reserve(fp)
	reserve(fp)
	reserve("other")
	if _, err := c.Complete(ctx, &idemv1.CompleteRequest{Namespace: "ns", Key: key, Token: 1, Result: &idemv1.Result{Body: []byte(body)}}); err != nil {
		t.Fatal(err)
	}
	reserve(fp)

	out := buf.String()
	for _, secret := range []string{key, fp, body} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains %q: %s", secret, out)
		}
	}
	var got []string
	for _, line := range logLines(t, out) {
		if line["grpc.method"] == "Reserve" {
			o, _ := line["outcome"].(string)
			got = append(got, o)
		}
	}
	want := []string{"RESERVED", "IN_PROGRESS", "MISMATCH", "COMPLETED"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("Reserve log lines have outcome %q, want %q", got, want)
	}
}

// An unreachable collector must not write plain-text lines into idemd's
// JSON log (OTel's default error handler prints to the standard logger).
func TestTracingErrorsGoToLog(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	var std bytes.Buffer
	prevOut, prevFlags := log.Writer(), log.Flags()
	log.SetOutput(&std)
	defer func() { log.SetOutput(prevOut); log.SetFlags(prevFlags) }()
	prevHandler := otel.GetErrorHandler()
	defer otel.SetErrorHandler(prevHandler)

	var buf syncBuffer
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	shutdown, err := SetupTracing(ctx, "idemd", "test", NewLogger(&buf, slog.LevelInfo))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(ctx)
	otel.Handle(errors.New("traces export: connection refused"))
	if std.Len() > 0 {
		t.Errorf("OTel error went to the standard logger: %q", std.String())
	}
	lines := logLines(t, buf.String())
	if len(lines) != 1 || lines[0]["level"] != "WARN" || !strings.Contains(lines[0]["err"].(string), "connection refused") {
		t.Errorf("log = %s, want one WARN line with the error", buf.String())
	}
}

// Spans carry the caller's trace and the method, never keys, fingerprints
// or results.
func TestSpansCarryNoPayload(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	defer func() { otel.SetTracerProvider(prev); _ = tp.Shutdown(ctx) }()
	otel.SetTextMapPropagator(propagation.TraceContext{})

	mem := memory.New()
	defer mem.Close()
	svc, err := server.New(mem, server.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	lis := listen(t)
	gs := server.NewGRPCServer(svc, StatsHandler())
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	c := idemv1.NewIdempotencyServiceClient(dialBuf(t, lis))

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	cctx := metadata.AppendToOutgoingContext(ctx, "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	const key, fp, body = "raw-key-4711", "fingerprint-secret", "result-body-secret"
	if _, err := c.Reserve(cctx, &idemv1.ReserveRequest{Namespace: "ns", Key: key, Fingerprint: []byte(fp)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Complete(cctx, &idemv1.CompleteRequest{Namespace: "ns", Key: key, Token: 2, Result: &idemv1.Result{Body: []byte(body)}}); err == nil {
		t.Fatal("Complete with a wrong token succeeded")
	}
	// A server span ends after its answer is sent, so the client can read
	// the answer first: wait for both.
	spans := rec.Ended()
	for len(spans) < 2 && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
		spans = rec.Ended()
	}
	if len(spans) != 2 {
		t.Fatalf("recorded %d spans, want 2", len(spans))
	}
	for _, s := range spans {
		if s.SpanContext().TraceID().String() != traceID || s.SpanKind() != trace.SpanKindServer {
			t.Errorf("span %s: trace %s kind %v, want the caller's trace %s, server", s.Name(), s.SpanContext().TraceID(), s.SpanKind(), traceID)
		}
		var all strings.Builder
		all.WriteString(s.Name() + " " + s.Status().Description)
		for _, a := range s.Attributes() {
			all.WriteString(" " + string(a.Key) + "=" + a.Value.Emit())
		}
		for _, e := range s.Events() {
			all.WriteString(" " + e.Name)
			for _, a := range e.Attributes {
				all.WriteString(" " + string(a.Key) + "=" + a.Value.Emit())
			}
		}
		for _, secret := range []string{key, fp, body} {
			if strings.Contains(all.String(), secret) {
				t.Errorf("span %s carries %q: %s", s.Name(), secret, all.String())
			}
		}
	}
}

// The audit line names the tenant acted on, not what the request left
// empty (the caller's own tenant).
func TestAuditLine(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	var buf syncBuffer
	audit := AuditUnaryServerInterceptor(NewLogger(&buf, slog.LevelInfo))
	info := &grpc.UnaryServerInfo{FullMethod: idemv1.AdminService_DeleteKey_FullMethodName}
	const key = "raw-key-4711"
	req := &idemv1.DeleteKeyRequest{Namespace: "ns", Key: key}
	handler := func(context.Context, any) (any, error) { return &idemv1.DeleteKeyResponse{}, nil }

	id := auth.Identity{Tenant: "acme", Role: auth.RoleAdmin, Subject: "token:ops"}
	if _, err := audit(auth.NewContext(ctx, id), req, info, handler); err != nil {
		t.Fatal(err)
	}
	if _, err := audit(ctx, req, info, handler); err != nil { // no authentication
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), key) {
		t.Errorf("audit log contains the raw key: %s", buf.String())
	}
	lines := logLines(t, buf.String())
	if len(lines) != 2 {
		t.Fatalf("audit log has %d lines, want 2: %s", len(lines), buf.String())
	}
	want := map[string]any{"msg": "audit", "action": "DeleteKey", "code": "OK", "who": "token:ops", "who_tenant": "acme", "role": "admin",
		"tenant": "acme", "namespace": "ns", "key_hash": HashKey(key)}
	for k, v := range want {
		if lines[0][k] != v {
			t.Errorf("audit field %s = %v, want %v", k, lines[0][k], v)
		}
	}
	if lines[1]["tenant"] != "default" {
		t.Errorf("audit field tenant without authentication = %v, want default", lines[1]["tenant"])
	}
}

// damagedStore answers every Reserve as a record it cannot decode.
type damagedStore struct{ storage.Store }

func (damagedStore) Reserve(_ context.Context, p storage.ReserveParams) (storage.Outcome, *storage.Record, error) {
	return 0, nil, storage.Damaged(p.ID, errors.New("unknown codec version 9"))
}

// A damaged record's answer names its key for the caller who owns it; the
// call's log line keeps to key_hash.
func TestCallLogOfDamagedRecord(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	mem := memory.New()
	defer mem.Close()
	c, buf := loggedServer(t, damagedStore{mem})
	const key = "raw-key-damaged-4711"
	_, err := c.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: key})
	if status.Code(err) != codes.DataLoss || !strings.Contains(status.Convert(err).Message(), key) {
		t.Fatalf("Reserve() = %v, want DATA_LOSS naming the key", err)
	}
	out := buf.String()
	if strings.Contains(out, key) {
		t.Errorf("log contains the key: %s", out)
	}
	lines := logLines(t, out)
	if len(lines) != 1 || lines[0]["grpc.code"] != "DataLoss" || !strings.Contains(fmt.Sprint(lines[0]["grpc.error"]), "cannot be decoded") {
		t.Errorf("log lines = %v, want one DataLoss line saying the record cannot be decoded", lines)
	}
}

// A caller's namespace and tenant reach the log line before validation
// refuses them: a line must not grow with them (4 MiB fit in a request).
func TestLogLinesBoundCallersStrings(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	huge := strings.Repeat("é", 1<<19) // 1 MiB
	mem := memory.New()
	defer mem.Close()
	c, buf := loggedServer(t, mem)
	_, err := c.Lookup(ctx, &idemv1.LookupRequest{Tenant: huge, Namespace: huge, Key: "k"})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Lookup(1 MiB namespace) error = %v, want InvalidArgument", err)
	}
	var abuf syncBuffer
	audit := AuditUnaryServerInterceptor(NewLogger(&abuf, slog.LevelInfo))
	info := &grpc.UnaryServerInfo{FullMethod: idemv1.AdminService_DeleteKey_FullMethodName}
	handler := func(context.Context, any) (any, error) {
		return nil, status.Error(codes.InvalidArgument, "idem: namespace too long")
	}
	_, _ = audit(ctx, &idemv1.DeleteKeyRequest{Tenant: huge, Namespace: huge, Key: "k"}, info, handler)
	for name, out := range map[string]string{"call": buf.String(), "audit": abuf.String()} {
		if n := len(out); n > 8<<10 {
			t.Errorf("%s log is %d bytes for one call, want it bounded", name, n)
		}
		for _, l := range logLines(t, out) {
			for _, f := range []string{"namespace", "tenant"} {
				if v, _ := l[f].(string); !strings.HasPrefix(v, "éé") || !strings.HasSuffix(v, "…(1048576 bytes)") {
					t.Errorf("%s log field %s = %.40q…, want its start and length", name, f, v)
				}
			}
		}
	}
}
