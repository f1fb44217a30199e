package observe

import (
	"context"
	"net/http"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
)

// Registry holds every collector idemd exports.
type Registry struct {
	*prometheus.Registry
	// Metrics are idem's own.
	Metrics *Metrics
	// GRPC are the server RPC metrics (grpc_server_*).
	GRPC *grpcprom.ServerMetrics
}

// NewRegistry creates idem's metrics, the gRPC server metrics with the
// handling-time histogram, and the Go and process collectors, registered
// in a fresh registry (not the global one, so tests can make many).
func NewRegistry(opts ...MetricsOption) *Registry {
	r := &Registry{
		Registry: prometheus.NewRegistry(),
		Metrics:  NewMetrics(opts...),
		GRPC: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets(RPCBuckets))),
	}
	// Fresh registry and fixed, distinct names: registration cannot fail.
	if err := r.Metrics.Register(r.Registry); err != nil {
		panic(err)
	}
	r.MustRegister(r.GRPC, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Handler serves the registry for Prometheus (mount it on /metrics).
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.Registry, promhttp.HandlerOpts{Registry: r.Registry, EnableOpenMetrics: true})
}

// UnaryServerInterceptor records grpc_server_* for unary calls, with the
// trace id as exemplar when the call is traced.
func (r *Registry) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return r.GRPC.UnaryServerInterceptor(grpcprom.WithExemplarFromContext(exemplar))
}

// StreamServerInterceptor records grpc_server_* for streaming calls.
func (r *Registry) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return r.GRPC.StreamServerInterceptor(grpcprom.WithExemplarFromContext(exemplar))
}

// InitializeMetrics exports zero series for every method of s, so alerts
// on rates work before the first call. Call it after registering services.
func (r *Registry) InitializeMetrics(s *grpc.Server) { r.GRPC.InitializeMetrics(s) }

func exemplar(ctx context.Context) prometheus.Labels {
	if sc := trace.SpanContextFromContext(ctx); sc.IsSampled() {
		return prometheus.Labels{"trace_id": sc.TraceID().String()}
	}
	return nil
}
