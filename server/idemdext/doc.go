// Package idemdext plugs idem's operational packages into idemd: TLS and
// caller authentication (server/auth), per-call logs, the admin audit log,
// tracing and idem's service metrics (server/observe), and backpressure
// (server/limit). Importing it registers the extension and its flags;
// cmd/idemd does.
//
// The interceptors run in this order, outermost first: the tracing stats
// handler, idemd's RPC metrics (grpc_server_*, only with
// --metrics-listen), the call log, authentication, the admin audit log,
// the in-flight and per-tenant limits, idem's service metrics (only with
// --metrics-listen), the service. Refused calls are thus logged and
// counted, and limits apply to authenticated tenants.
package idemdext
