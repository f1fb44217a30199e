package client

import (
	"context"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// MetadataKey is the request metadata carrying the idempotency key.
const MetadataKey = "idempotency-key"

// ReplayedHeader is the response header set to "true" when the server
// interceptor answered from a stored result without running the handler.
const ReplayedHeader = "idempotency-replayed"

// ClientInterceptorOption configures UnaryClientInterceptor and StreamClientInterceptor.
type ClientInterceptorOption func(*clientInterceptorOptions)

type clientInterceptorOptions struct {
	newKey   func() (string, error)
	selector func(ctx context.Context, fullMethod string) bool
}

func evaluateClientInterceptorOptions(opts []ClientInterceptorOption) *clientInterceptorOptions {
	o := &clientInterceptorOptions{
		newKey: func() (string, error) {
			u, err := uuid.NewV7()
			return u.String(), err
		},
		selector: func(context.Context, string) bool { return true },
	}
	for _, opt := range opts {
		opt(o)
	}
	return o
}

// WithKeyGenerator replaces the UUIDv7 generator used when the context
// carries no key.
func WithKeyGenerator(f func() (string, error)) ClientInterceptorOption {
	return func(o *clientInterceptorOptions) { o.newKey = f }
}

// WithClientSelector limits the interceptor to the methods for which f
// returns true (e.g. leave reads alone).
func WithClientSelector(f func(ctx context.Context, fullMethod string) bool) ClientInterceptorOption {
	return func(o *clientInterceptorOptions) { o.selector = f }
}

// withOutgoingKey returns ctx with the idempotency-key metadata set: kept if
// already present (an outer layer chose it), else from WithKey, else new.
func (o *clientInterceptorOptions) withOutgoingKey(ctx context.Context, method string) (context.Context, error) {
	if !o.selector(ctx, method) {
		return ctx, nil
	}
	if md, ok := metadata.FromOutgoingContext(ctx); ok && len(md.Get(MetadataKey)) > 0 {
		return ctx, nil
	}
	key, ok := KeyFromContext(ctx)
	if !ok {
		var err error
		if key, err = o.newKey(); err != nil {
			return nil, err
		}
	}
	return metadata.AppendToOutgoingContext(ctx, MetadataKey, key), nil
}

// UnaryClientInterceptor attaches the idempotency-key metadata to every
// call: the key from WithKey, or a UUIDv7 generated once per logical call.
// Chain it before (outside) the retry interceptor, so every retry of the
// call carries the same key:
//
//	grpc.WithChainUnaryInterceptor(client.UnaryClientInterceptor(), retry.UnaryClientInterceptor(...))
func UnaryClientInterceptor(opts ...ClientInterceptorOption) grpc.UnaryClientInterceptor {
	o := evaluateClientInterceptorOptions(opts)
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, callOpts ...grpc.CallOption) error {
		ctx, err := o.withOutgoingKey(ctx, method)
		if err != nil {
			return err
		}
		return invoker(ctx, method, req, reply, cc, callOpts...)
	}
}

// StreamClientInterceptor is UnaryClientInterceptor for streams: one key per
// stream (server-streaming calls are deduplicated per call).
func StreamClientInterceptor(opts ...ClientInterceptorOption) grpc.StreamClientInterceptor {
	o := evaluateClientInterceptorOptions(opts)
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, callOpts ...grpc.CallOption) (grpc.ClientStream, error) {
		ctx, err := o.withOutgoingKey(ctx, method)
		if err != nil {
			return nil, err
		}
		return streamer(ctx, desc, cc, method, callOpts...)
	}
}
