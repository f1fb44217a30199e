// Package auth authenticates idemd's callers and binds every call to one
// tenant.
//
// A caller proves who it is with a client certificate (mutual TLS) or a
// bearer token (`authorization: Bearer …`). Certificates map to a tenant
// through a URI SAN with a configurable prefix (default
// "spiffe://idem/tenant/<tenant>", or "<prefix><tenant>/admin" for the admin
// role), through the Common Name when enabled, or through an explicit
// "cert:" line of the tokens file. Tokens are checked against a tokens file
// that stores only SHA-256 hashes, one line per token:
//
//	sha256:<64 hex> tenant=<tenant> role=client|admin [expires=<RFC 3339>] [name=<label>]
//	cert:<URI SAN or CN> tenant=<tenant> role=client|admin
//	revoked-cert:<64 hex SHA-256 of the certificate's DER>
//
// Revoking a token is removing its line; revoking a certificate is adding a
// revoked-cert line. The file, the server certificate and the client CA are
// reloaded on SIGHUP and when they change on disk (Authenticator.Watch); a
// reload that fails keeps the previous state.
//
// The interceptors refuse calls without valid credentials (UNAUTHENTICATED,
// the same message whatever was wrong, so a caller cannot probe tokens),
// refuse idem.v1.AdminService to the client role (PERMISSION_DENIED), and
// put the caller's Identity in the context. TenantFunc then resolves each
// request's tenant: the caller's own, or PERMISSION_DENIED for any other,
// whether or not the key exists. Health checks need no credentials, so
// probes work.
package auth
