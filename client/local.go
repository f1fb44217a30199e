package client

import (
	"context"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// Local wraps an in-process idem (any idemv1.IdempotencyServiceServer, such
// as *server.Service over an embedded store) as a Service, so the
// interceptors and consumer helpers work without a network hop. It answers
// a call as *Client does when idemd answers it: the same records, the same
// errors (a call whose context has ended is ctx.Err() and is not run), and
// a BatchReserve filled in the same way. What it lacks is what *Client adds
// around the wire: it does not retry, has no circuit breaker or cache, and
// fills in no default tenant or namespace. Nor is there a wire to limit a
// request's size: one larger than idemd reads (4 MiB, or twice its result
// limit plus 64 KiB), which idemd refuses with RESOURCE_EXHAUSTED, is served.
func Local(srv idemv1.IdempotencyServiceServer) Service { return local{srv} }

type local struct {
	srv idemv1.IdempotencyServiceServer
}

// call runs one call as *Client would send it. A call whose context has
// ended is not sent: gRPC answers it with ctx.Err() at once, whereas the
// server would still validate it, or answer a batch that reaches no store.
func call[Req, Resp any](ctx context.Context, f func(context.Context, Req) (Resp, error), req Req) (Resp, error) {
	if err := ctx.Err(); err != nil {
		var zero Resp
		return zero, err
	}
	resp, err := f(ctx, req)
	if err != nil {
		var zero Resp
		return zero, mapError(ctx, err)
	}
	return resp, nil
}

func (l local) Reserve(ctx context.Context, req *idemv1.ReserveRequest) (*idemv1.ReserveResponse, error) {
	return call(ctx, l.srv.Reserve, req)
}

func (l local) Complete(ctx context.Context, req *idemv1.CompleteRequest) (*idemv1.CompleteResponse, error) {
	return call(ctx, l.srv.Complete, req)
}

func (l local) Release(ctx context.Context, req *idemv1.ReleaseRequest) (*idemv1.ReleaseResponse, error) {
	return call(ctx, l.srv.Release, req)
}

func (l local) ExtendLease(ctx context.Context, req *idemv1.ExtendLeaseRequest) (*idemv1.ExtendLeaseResponse, error) {
	return call(ctx, l.srv.ExtendLease, req)
}

func (l local) Checkpoint(ctx context.Context, req *idemv1.CheckpointRequest) (*idemv1.CheckpointResponse, error) {
	return call(ctx, l.srv.Checkpoint, req)
}

func (l local) Lookup(ctx context.Context, req *idemv1.LookupRequest) (*idemv1.LookupResponse, error) {
	return call(ctx, l.srv.Lookup, req)
}

// BatchReserve fills in the items past the answer's budget as
// Client.BatchReserve does.
func (l local) BatchReserve(ctx context.Context, req *idemv1.BatchReserveRequest) (*idemv1.BatchReserveResponse, error) {
	resp, err := call(ctx, l.srv.BatchReserve, req)
	if err != nil {
		return nil, err
	}
	fillBatchReserve(ctx, l.Reserve, req, resp)
	return resp, nil
}

func (l local) BatchComplete(ctx context.Context, req *idemv1.BatchCompleteRequest) (*idemv1.BatchCompleteResponse, error) {
	return call(ctx, l.srv.BatchComplete, req)
}
