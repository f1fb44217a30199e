package observe

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/idemhq/idem"
	"github.com/idemhq/idem/internal/keyhash"
	"github.com/idemhq/idem/internal/textcut"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// NewLogger returns a JSON slog logger writing to w at level.
func NewLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

// HashKey is how a key appears in logs: the first 12 hex digits of its
// SHA-256, enough to correlate lines about one key without revealing it.
// The interceptors and consumers in users' services log the same
// (internal/keyhash), so their lines match idemd's.
func HashKey(key string) string { return keyhash.Of(key) }

const healthPrefix = "/grpc.health.v1.Health/"

// The request fields the logging interceptor reads; every idem.v1 request
// has the first two, single-key requests the third.
type (
	tenanted   interface{ GetTenant() string }
	namespaced interface{ GetNamespace() string }
	keyed      interface{ GetKey() string }
)

// maxLoggedText bounds a caller's string in a log line. Lines are written
// before (and about) validation, which refuses a namespace over its limit
// but cannot stop a 4 MiB one from being logged whole, on every call.
const maxLoggedText = 1024

// logText is s cut to maxLoggedText bytes, with its length, so a line
// about a refused call still tells what was sent.
func logText(s string) string { return textcut.Bounded(s, maxLoggedText) }

func requestFields(req any) logging.Fields {
	var f logging.Fields
	if r, ok := req.(namespaced); ok && r.GetNamespace() != "" {
		f = append(f, "namespace", logText(r.GetNamespace()))
	}
	if r, ok := req.(keyed); ok && r.GetKey() != "" {
		f = append(f, "key_hash", HashKey(r.GetKey()))
	}
	return f
}

func traceFields(ctx context.Context) logging.Fields {
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		return logging.Fields{"trace_id", sc.TraceID().String()}
	}
	return nil
}

type callLogKey struct{}

// callLog is one call's state between the logging interceptor's start and
// finish: the go-grpc-middleware interceptor asks finishFields at both,
// and fields given at the start would win over the tenant auth sets later.
type callLog struct {
	requestedTenant string
	hasTenant       bool
	started         bool
}

// tenantOrDefault is the tenant a request acts on without authentication:
// an empty one means server.DefaultTenant.
func tenantOrDefault(t string) string {
	if t == "" {
		return "default"
	}
	return t
}

// withCallLog remembers the tenant a request names, for the log line of a
// call that authentication did not handle.
func withCallLog(ctx context.Context, req any) context.Context {
	cl := &callLog{}
	if r, ok := req.(tenanted); ok {
		cl.requestedTenant, cl.hasTenant = logText(tenantOrDefault(r.GetTenant())), true
	}
	return context.WithValue(ctx, callLogKey{}, cl)
}

// finishFields are the trace id and, at the end of the call, the tenant
// the request named unless authentication set the caller's ("tenant",
// empty for refused credentials).
func finishFields(ctx context.Context) logging.Fields {
	f := traceFields(ctx)
	cl, ok := ctx.Value(callLogKey{}).(*callLog)
	if !ok || !cl.started {
		if ok {
			cl.started = true
		}
		return f
	}
	if !cl.hasTenant {
		return f
	}
	for i := logging.ExtractFields(ctx).Iterator(); i.Next(); {
		if k, _ := i.At(); k == "tenant" {
			return f
		}
	}
	return append(f, "tenant", cl.requestedTenant)
}

func loggingOptions() []logging.Option {
	return []logging.Option{
		// One line per call; payloads are never logged.
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithFieldsFromContext(finishFields),
		logging.WithDurationField(func(d time.Duration) logging.Fields {
			return logging.Fields{"latency_ms", float64(d.Microseconds()) / 1000}
		}),
		logging.WithDisableLoggingFields(logging.ComponentFieldKey, logging.MethodTypeFieldKey),
	}
}

func adapter(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, withoutKeys(fields)...)
	})
}

// withoutKeys replaces the error text of a DATA_LOSS call: it names the
// damaged record's key for the caller who owns it, and log lines show keys
// only as key_hash.
func withoutKeys(fields []any) []any {
	dataLoss := false
	for i := 0; i+1 < len(fields); i += 2 {
		if fields[i] == "grpc.code" && fmt.Sprint(fields[i+1]) == codes.DataLoss.String() {
			dataLoss = true
		}
	}
	if !dataLoss {
		return fields
	}
	out := slices.Clone(fields)
	for i := 0; i+1 < len(out); i += 2 {
		if out[i] == "grpc.error" {
			out[i+1] = idem.ErrDamaged.Error()
		}
	}
	return out
}

// UnaryServerInterceptor logs every finished unary call except health
// checks: grpc.service, grpc.method, grpc.code, latency_ms, trace_id,
// tenant (the caller's, once auth ran), namespace, key_hash and a
// Reserve's outcome. Place it outside the auth interceptor so refused
// calls are logged too.
func UnaryServerInterceptor(l *slog.Logger) grpc.UnaryServerInterceptor {
	inner := logging.UnaryServerInterceptor(adapter(l), loggingOptions()...)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if strings.HasPrefix(info.FullMethod, healthPrefix) {
			return handler(ctx, req)
		}
		if f := requestFields(req); f != nil {
			ctx = logging.InjectFields(ctx, f)
		}
		ctx = withCallLog(ctx, req)
		if info.FullMethod == idemv1.IdempotencyService_Reserve_FullMethodName {
			handler = withOutcome(handler)
		}
		return inner(ctx, req, info, handler)
	}
}

// withOutcome adds a Reserve's answer to its log line: IN_PROGRESS and
// MISMATCH are OK calls, and the line would not tell them from RESERVED.
func withOutcome(handler grpc.UnaryHandler) grpc.UnaryHandler {
	return func(ctx context.Context, req any) (any, error) {
		resp, err := handler(ctx, req)
		if r, ok := resp.(*idemv1.ReserveResponse); ok && err == nil {
			logging.AddFields(ctx, logging.Fields{"outcome", strings.TrimPrefix(r.GetOutcome().String(), "RESERVE_OUTCOME_")})
		}
		return resp, err
	}
}

// StreamServerInterceptor logs every finished streaming call except health watches.
func StreamServerInterceptor(l *slog.Logger) grpc.StreamServerInterceptor {
	inner := logging.StreamServerInterceptor(adapter(l), loggingOptions()...)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if strings.HasPrefix(info.FullMethod, healthPrefix) {
			return handler(srv, ss)
		}
		w := middleware.WrapServerStream(ss)
		w.WrappedContext = withCallLog(ss.Context(), nil)
		return inner(srv, w, info, handler)
	}
}
