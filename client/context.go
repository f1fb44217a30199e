package client

import "context"

type keyCtxKey struct{}

type tokenCtxKey struct{}

// WithKey returns a context whose outgoing calls carry key as their
// idempotency key (UnaryClientInterceptor, StreamClientInterceptor). Use it
// when the key comes from the caller's own domain, e.g. an order id, so that
// a retry after a process restart reuses it.
func WithKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, keyCtxKey{}, key)
}

// KeyFromContext returns the key set by WithKey.
func KeyFromContext(ctx context.Context) (string, bool) {
	k, ok := ctx.Value(keyCtxKey{}).(string)
	return k, ok && k != ""
}

// ContextWithToken returns a context carrying the fencing token of the
// attempt that holds an idempotency key. The server interceptors and the
// consumer helpers put it into the handler's context.
func ContextWithToken(ctx context.Context, token uint64) context.Context {
	return context.WithValue(ctx, tokenCtxKey{}, token)
}

// TokenFromContext returns the fencing token of the attempt running this
// handler. Pass it to downstream systems that reject writes carrying a token
// older than one they have seen, so that an attempt whose lease was taken
// over cannot overwrite the new holder's work.
func TokenFromContext(ctx context.Context) (uint64, bool) {
	t, ok := ctx.Value(tokenCtxKey{}).(uint64)
	return t, ok
}
