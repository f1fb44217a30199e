// Package limit sheds load before it queues: a bound on the calls one
// idemd serves at once, and a token-bucket rate per tenant.
//
// Both checks are non-blocking. A call over either limit is refused at
// once with RESOURCE_EXHAUSTED, a google.rpc.ErrorInfo (reason
// RESOURCE_EXHAUSTED, metadata limit=inflight, tenant_inflight or
// tenant_rate) and a google.rpc.RetryInfo telling the client when to come
// back, so an overloaded replica answers quickly instead of growing a
// queue, and clients with retry policies back off. Health checks are never
// limited, so an overloaded replica is not also restarted by its probes.
//
// The per-tenant buckets live in a bounded LRU map: tenants idle longest
// are evicted first, and a tenant that returns starts with a full bucket,
// which is what it would have after being idle anyway.
package limit
