package client_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/idemhq/idem/client"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server/observe"
)

// What a caller's request carries that the service's logs must never show.
const (
	personalKey = "order-4711/alice@example.com"
	secretBody  = "SECRET-BODY-4242"
	bearer      = "Bearer SECRET-TOKEN-0451"
)

// logBuffer is a slog JSON sink that the heartbeat's goroutine may write too.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for l := range strings.SplitSeq(strings.TrimSpace(b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// faultyService fails the chosen calls on their way to idem.
type faultyService struct {
	client.Service
	completeErr, releaseErr, extendErr error
}

func (f *faultyService) Complete(ctx context.Context, req *idemv1.CompleteRequest) (*idemv1.CompleteResponse, error) {
	if f.completeErr != nil {
		return nil, f.completeErr
	}
	return f.Service.Complete(ctx, req)
}

func (f *faultyService) Release(ctx context.Context, req *idemv1.ReleaseRequest) (*idemv1.ReleaseResponse, error) {
	if f.releaseErr != nil {
		return nil, f.releaseErr
	}
	return f.Service.Release(ctx, req)
}

func (f *faultyService) ExtendLease(ctx context.Context, req *idemv1.ExtendLeaseRequest) (*idemv1.ExtendLeaseResponse, error) {
	if f.extendErr != nil {
		return nil, f.extendErr
	}
	return f.Service.ExtendLease(ctx, req)
}

// echoService answers with the request's payload, so a logged result body
// would show secretBody.
func echoService() *testService {
	return &testService{
		unary: func(_ context.Context, _ int64, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
			return &testgrpc.SimpleResponse{Payload: req.GetPayload()}, nil
		},
		output: func(_ int64, req *testgrpc.StreamingOutputCallRequest, ss grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
			return ss.Send(&testgrpc.StreamingOutputCallResponse{Payload: req.GetPayload()})
		},
	}
}

// callerCtx is a call as a real caller makes it: a personal key and a
// credential in its metadata.
func callerCtx(ctx context.Context) context.Context {
	return client.WithKey(metadata.AppendToOutgoingContext(ctx, "authorization", bearer), personalKey)
}

// downIdem is a client of an idem address nothing listens on.
func downIdem(t *testing.T) *client.Client {
	t.Helper()
	l := listen(t, true)
	target := l.target
	l.Close()
	c, err := client.New(target, client.WithInsecure(), client.WithRetry(1, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// fingerprintOf is the interceptor's fingerprint of req, in the two forms
// a log line could show it.
func fingerprintOf(t *testing.T, method string, req proto.Message) []string {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	h.Write([]byte(method))
	h.Write([]byte{0})
	h.Write(b)
	sum := h.Sum(nil)
	return []string{hex.EncodeToString(sum), base64.StdEncoding.EncodeToString(sum)}
}

// TestLogHygiene drives every path on which the interceptors log and
// checks each line: the key only as idemd logs it (key_hash), the method,
// a level that says whether anyone must act, and none of the caller's key,
// payload, result, fingerprint or credential.
func TestLogHygiene(t *testing.T) {
	unary := testgrpc.TestService_UnaryCall_FullMethodName
	unaryRequest := unaryReq(secretBody)
	unaryCall := func(t *testing.T, a *appEnv) {
		t.Helper()
		_, _ = a.tc.UnaryCall(callerCtx(testCtx(t)), unaryRequest)
	}
	unavailable := fmt.Errorf("%w: injected", client.ErrUnavailable)
	leaseLost := fmt.Errorf("%w: injected", client.ErrLeaseLost)
	failing := func(c codes.Code) *testService {
		return &testService{unary: func(context.Context, int64, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
			return nil, status.Error(c, "handler failed")
		}}
	}

	type want struct {
		level, msg, method string
	}
	tests := []struct {
		name string
		run  func(t *testing.T, l *slog.Logger)
		want []want // in order; nil: no line at all
	}{
		{
			name: "replay",
			run: func(t *testing.T, l *slog.Logger) {
				a := startApp(t, appConfig{ts: echoService(), opts: []client.InterceptorOption{client.WithLogger(l)}})
				unaryCall(t, a)
				unaryCall(t, a)
				if n := a.counters.Replayed.Load(); n != 1 {
					t.Fatalf("Replayed = %d, want 1", n)
				}
			},
		},
		{
			name: "idem refuses",
			run: func(t *testing.T, l *slog.Logger) {
				deny := func(context.Context, any, *grpc.UnaryServerInfo, grpc.UnaryHandler) (any, error) {
					return nil, status.Error(codes.PermissionDenied, "token not accepted")
				}
				ie := startIdem(t, idemConfig{remote: true, serverExtra: []grpc.UnaryServerInterceptor{deny}})
				unaryCall(t, startAppWith(t, appConfig{ts: echoService(), opts: []client.InterceptorOption{client.WithLogger(l)}}, ie.svc))
			},
			want: []want{{"ERROR", "idem refused the reservation; refusing call", unary}},
		},
		{
			// A damaged record's answer names its key, for its owner;
			// the line shows the key only as key_hash.
			name: "idem answers a damaged record",
			run: func(t *testing.T, l *slog.Logger) {
				damaged := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
					if r, ok := req.(*idemv1.ReserveRequest); ok {
						return nil, status.Errorf(codes.DataLoss, "idem: stored record cannot be decoded: key %q in namespace %q; an admin DeleteKey removes it", r.GetKey(), r.GetNamespace())
					}
					return h(ctx, req)
				}
				ie := startIdem(t, idemConfig{remote: true, serverExtra: []grpc.UnaryServerInterceptor{damaged}})
				unaryCall(t, startAppWith(t, appConfig{ts: echoService(), opts: []client.InterceptorOption{client.WithLogger(l)}}, ie.svc))
			},
			want: []want{{"ERROR", "idem refused the reservation; refusing call", unary}},
		},
		{
			name: "idem unreachable, fail closed",
			run: func(t *testing.T, l *slog.Logger) {
				unaryCall(t, startAppWith(t, appConfig{ts: echoService(), opts: []client.InterceptorOption{client.WithLogger(l)}}, downIdem(t)))
			},
			want: []want{{"WARN", "idem unreachable; refusing call", unary}},
		},
		{
			name: "idem unreachable, fail open",
			run: func(t *testing.T, l *slog.Logger) {
				opts := []client.InterceptorOption{client.WithLogger(l), client.WithFailOpen(func(string) bool { return true })}
				unaryCall(t, startAppWith(t, appConfig{ts: echoService(), opts: opts}, downIdem(t)))
			},
			want: []want{{"WARN", "idem unreachable; running handler without deduplication", unary}},
		},
		{
			name: "heartbeat fails",
			run: func(t *testing.T, l *slog.Logger) {
				ctx := testCtx(t)
				hbClk := clockwork.NewFakeClock()
				entered := make(chan struct{})
				ts := &testService{unary: func(ctx context.Context, _ int64, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
					close(entered)
					<-ctx.Done() // the lost lease cancels the handler
					return nil, status.FromContextError(ctx.Err()).Err()
				}}
				svc := &faultyService{Service: startIdem(t, idemConfig{}).svc, extendErr: leaseLost}
				a := startAppWith(t, appConfig{ts: ts, opts: []client.InterceptorOption{
					client.WithLogger(l), client.WithHeartbeatClock(hbClk), client.WithLease(2*time.Second, 2*time.Second, 2*time.Second),
				}}, svc)
				done := make(chan struct{})
				go func() {
					defer close(done)
					unaryCall(t, a)
				}()
				<-entered
				if err := hbClk.BlockUntilContext(ctx, 1); err != nil {
					t.Fatal(err)
				}
				hbClk.Advance(time.Second)
				<-done
			},
			want: []want{{"WARN", "idem lease heartbeat failed", unary}},
		},
		{
			name: "release fails",
			run: func(t *testing.T, l *slog.Logger) {
				svc := &faultyService{Service: startIdem(t, idemConfig{}).svc, releaseErr: unavailable}
				unaryCall(t, startAppWith(t, appConfig{ts: failing(codes.Unavailable), opts: []client.InterceptorOption{client.WithLogger(l)}}, svc))
			},
			// The key stays held until its lease ends: retries are refused meanwhile.
			want: []want{{"WARN", "idem release failed", unary}},
		},
		{
			name: "release after a takeover",
			run: func(t *testing.T, l *slog.Logger) {
				svc := &faultyService{Service: startIdem(t, idemConfig{}).svc, releaseErr: leaseLost}
				unaryCall(t, startAppWith(t, appConfig{ts: failing(codes.Unavailable), opts: []client.InterceptorOption{client.WithLogger(l)}}, svc))
			},
			// Another attempt holds the key: nothing is stuck, nothing to do.
			want: []want{{"INFO", "idem release failed", unary}},
		},
		{
			name: "result too large",
			run: func(t *testing.T, l *slog.Logger) {
				unaryCall(t, startApp(t, appConfig{ts: echoService(), opts: []client.InterceptorOption{client.WithLogger(l), client.WithMaxResultSize(8)}}))
			},
			want: []want{{"WARN", "idem result too large to store; not cached", unary}},
		},
		{
			name: "complete fails",
			run: func(t *testing.T, l *slog.Logger) {
				svc := &faultyService{Service: startIdem(t, idemConfig{}).svc, completeErr: unavailable}
				unaryCall(t, startAppWith(t, appConfig{ts: echoService(), opts: []client.InterceptorOption{client.WithLogger(l)}}, svc))
			},
			// The handler ran and a retry will run it again.
			want: []want{{"ERROR", "idem complete failed after the handler ran; result not stored", unary}},
		},
		{
			name: "server stream too large",
			run: func(t *testing.T, l *slog.Logger) {
				a := startApp(t, appConfig{ts: echoService(), opts: []client.InterceptorOption{client.WithLogger(l), client.WithMaxResultSize(8)}})
				s, err := a.tc.StreamingOutputCall(callerCtx(testCtx(t)), &testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte(secretBody)}})
				if err != nil {
					t.Fatal(err)
				}
				for {
					if _, err := s.Recv(); err != nil {
						break
					}
				}
			},
			want: []want{{"WARN", "idem result too large to store; not cached", testgrpc.TestService_StreamingOutputCall_FullMethodName}},
		},
		{
			name: "stream message complete fails",
			run: func(t *testing.T, l *slog.Logger) {
				svc := &faultyService{Service: startIdem(t, idemConfig{}).svc, completeErr: unavailable}
				a := startAppWith(t, appConfig{opts: []client.InterceptorOption{client.WithLogger(l), client.WithStreamMessageKey(bodyKey)}}, svc)
				s, err := a.tc.StreamingInputCall(metadata.AppendToOutgoingContext(testCtx(t), "authorization", bearer))
				if err != nil {
					t.Fatal(err)
				}
				// The message's key is its body, here the personal key.
				if err := s.Send(&testgrpc.StreamingInputCallRequest{Payload: &testgrpc.Payload{Body: []byte(personalKey)}}); err != nil {
					t.Fatal(err)
				}
				if _, err := s.CloseAndRecv(); err != nil && err != io.EOF {
					t.Fatal(err)
				}
			},
			want: []want{{"ERROR", "idem complete failed after the handler ran; result not stored", testgrpc.TestService_StreamingInputCall_FullMethodName}},
		},
	}
	secrets := append([]string{personalKey, "alice@example.com", secretBody, "SECRET-TOKEN"}, fingerprintOf(t, unary, unaryRequest)...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf logBuffer
			tt.run(t, slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
			out := buf.String()
			for _, s := range secrets {
				if strings.Contains(out, s) {
					t.Errorf("logs show %q:\n%s", s, out)
				}
			}
			lines := buf.lines(t)
			if len(lines) != len(tt.want) {
				t.Fatalf("logged %d lines, want %d:\n%s", len(lines), len(tt.want), out)
			}
			for i, w := range tt.want {
				got := lines[i]
				if got["level"] != w.level || got["msg"] != w.msg || got["method"] != w.method {
					t.Errorf("line %d = %v %q method %v, want %v %q method %v", i, got["level"], got["msg"], got["method"], w.level, w.msg, w.method)
				}
				// The same value idemd logs for this key, so the lines match.
				if h := got["key_hash"]; h != observe.HashKey(personalKey) {
					t.Errorf("line %d key_hash = %v, want %s (idemd's)", i, h, observe.HashKey(personalKey))
				}
				if _, ok := got["key"]; ok {
					t.Errorf("line %d has a key attribute: %v", i, got)
				}
			}
		})
	}
}
