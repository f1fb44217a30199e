package observe

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/idemhq/idem"
)

// TracingEnabled reports whether the environment asks for span export.
func TracingEnabled() bool {
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// SetupTracing installs W3C trace-context propagation and, when
// TracingEnabled, a tracer provider exporting spans over OTLP/gRPC (the
// exporter reads the standard OTEL_EXPORTER_OTLP_* variables; resource
// attributes come from OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES).
// OTel's errors (a failed export) are logged to log at WARN.
// The returned shutdown flushes pending spans; call it on exit.
func SetupTracing(ctx context.Context, service, version string, log *slog.Logger) (shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	// OTel's default handler prints plain text to the standard logger, in
	// the middle of idemd's JSON lines.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("tracing error", "err", err)
	}))
	if !TracingEnabled() {
		return func(context.Context) error { return nil }, nil
	}
	exp, err := otlptracegrpc.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("idem: create OTLP trace exporter: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		semconv.ServiceName(service), semconv.ServiceVersion(version)))
	if err != nil {
		return nil, fmt.Errorf("idem: tracing resource: %w", err)
	}
	// Environment attributes (OTEL_SERVICE_NAME, …) win over the defaults above.
	if envRes, err := resource.New(ctx, resource.WithFromEnv()); err == nil {
		if merged, err := resource.Merge(res, envRes); err == nil {
			res = merged
		}
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}

// StatsHandler is the grpc.ServerOption that traces every call except
// health checks, with the global tracer provider SetupTracing installed.
func StatsHandler() grpc.ServerOption {
	return grpc.StatsHandler(keylessHandler{otelgrpc.NewServerHandler(
		otelgrpc.WithFilter(filters.Not(filters.ServiceName("grpc.health.v1.Health"))))})
}

// keylessHandler keeps keys out of spans: otelgrpc copies the message of
// a server-side error into the span's status, and a DATA_LOSS answer's
// message names the damaged record's key for the caller who owns it
// (the call log drops it the same way, withoutKeys).
type keylessHandler struct{ stats.Handler }

func (h keylessHandler) HandleRPC(ctx context.Context, rs stats.RPCStats) {
	if end, ok := rs.(*stats.End); ok && end.Error != nil && status.Code(end.Error) == codes.DataLoss {
		e := *end
		e.Error = status.Error(codes.DataLoss, idem.ErrDamaged.Error())
		rs = &e
	}
	h.Handler.HandleRPC(ctx, rs)
}
