// Package idemdext plugs idem's operational packages into idemd: TLS and
// caller authentication (server/auth), per-call logs, the admin audit log,
// tracing and idem's service metrics (server/observe), and backpressure
// (server/limit). Importing it registers the extension and its flags;
// cmd/idemd does.
//
// The interceptors run in this order, outermost first: the tracing stats
// handler, idemd's RPC metrics (grpc_server_*, only with
// --metrics-listen), the call log, the admin audit log, authentication,
// the in-flight and per-tenant limits, idem's service metrics (only with
// --metrics-listen), the service. Refused calls thus appear in the call
// log and the metrics (admin calls in the audit log too), and limits apply
// to authenticated tenants.
//
// The call log (one line per finished call) is off unless --log-calls or
// --log-level debug: at idemd's call rates it is a large share of the
// CPU a call costs. Refused credentials, store trouble, internal errors
// and every admin call (the audit log) are logged regardless.
package idemdext
