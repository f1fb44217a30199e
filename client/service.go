package client

import (
	"context"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// Service is what the interceptors and the consumer helpers need from idem.
// *Client satisfies it over the network; Local wraps an in-process engine
// (any idemv1.IdempotencyServiceServer, such as server.Service) so a single
// service can use idem as a library without a network hop. Errors are the
// sentinels of package idem (errors.Is(err, client.ErrLeaseLost)).
type Service interface {
	Reserve(ctx context.Context, req *idemv1.ReserveRequest) (*idemv1.ReserveResponse, error)
	Complete(ctx context.Context, req *idemv1.CompleteRequest) (*idemv1.CompleteResponse, error)
	Release(ctx context.Context, req *idemv1.ReleaseRequest) (*idemv1.ReleaseResponse, error)
	ExtendLease(ctx context.Context, req *idemv1.ExtendLeaseRequest) (*idemv1.ExtendLeaseResponse, error)
	Checkpoint(ctx context.Context, req *idemv1.CheckpointRequest) (*idemv1.CheckpointResponse, error)
	Lookup(ctx context.Context, req *idemv1.LookupRequest) (*idemv1.LookupResponse, error)
	BatchReserve(ctx context.Context, req *idemv1.BatchReserveRequest) (*idemv1.BatchReserveResponse, error)
	BatchComplete(ctx context.Context, req *idemv1.BatchCompleteRequest) (*idemv1.BatchCompleteResponse, error)
}
