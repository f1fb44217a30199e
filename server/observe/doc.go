// Package observe gives idemd its metrics, traces and logs.
//
// Metrics are Prometheus collectors with fixed names (MetricNames lists
// them; dashboards and alerts in deploy/ are tested against that list):
// idem's own counters and histograms in Metrics, go-grpc-middleware's
// server RPC metrics with a handling-time histogram, and the Go and process
// collectors, all in one Registry served by Registry.Handler on /metrics.
// InstrumentStore times every storage.Store call.
//
// Tracing is OpenTelemetry through otelgrpc's stats handler; spans are
// exported over OTLP/gRPC only when OTEL_EXPORTER_OTLP_ENDPOINT (or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, and W3C trace context is
// propagated either way so log lines carry the caller's trace id.
//
// Logs are JSON through log/slog. The logging interceptors write one line
// per finished call with tenant, namespace, method, code, latency and
// trace id. Keys are logged only as HashKey's short SHA-256 prefix and
// payloads never, so logs can be shipped where records must not go.
package observe
