// Package server implements idem's gRPC API (idem.v1.IdempotencyService and
// idem.v1.AdminService) over a storage.Store.
//
// The server knows nothing about any database. It validates every request
// field against its Limits and the namespace's Policy before a store sees
// it, resolves the tenant, maps store errors to gRPC statuses in one place
// (see [Service.Status]), waits for in-progress keys when a Reserve asks to, and
// reports the store's health through the standard gRPC health service.
//
// NewGRPCServer wires a Service, the health service and server reflection
// into one *grpc.Server; idemd and the tests share it, and callers add
// their interceptors (auth, metrics, logging) as grpc.ServerOptions.
package server
