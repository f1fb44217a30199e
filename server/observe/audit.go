package observe

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/idemhq/idem/server/auth"
)

const adminPrefix = "/idem.v1.AdminService/"

// AuditUnaryServerInterceptor writes one "audit" line for every call of
// idem.v1.AdminService, refused or not: who (the credential's subject,
// tenant and role, or the peer address without authentication), what (the
// method, tenant, namespace and key hash or key-prefix hash), when, and
// the resulting code. Place it outside the auth interceptor, so that the
// calls auth refuses are audited too; auth tells it the caller it found
// (auth.WithCallerSlot). A call refused for its credentials is logged with
// its peer and without the tenant it claimed, which nobody vouched for.
func AuditUnaryServerInterceptor(l *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !strings.HasPrefix(info.FullMethod, adminPrefix) {
			return handler(ctx, req)
		}
		start := time.Now()
		slotted, caller := auth.WithCallerSlot(ctx)
		resp, err := handler(slotted, req)
		code := status.Code(err)
		attrs := make([]slog.Attr, 0, 12)
		attrs = append(attrs,
			slog.String("action", strings.TrimPrefix(info.FullMethod, adminPrefix)),
			slog.Time("at", start.UTC()),
			slog.String("code", code.String()))
		id, authed := auth.FromContext(ctx)
		if !authed {
			id, authed = caller()
		}
		if authed {
			attrs = append(attrs, slog.String("who", id.Subject), slog.String("who_tenant", id.Tenant), slog.String("role", string(id.Role)))
		}
		if p, ok := peer.FromContext(ctx); ok {
			attrs = append(attrs, slog.String("peer", p.Addr.String()))
		}
		if code == codes.Unauthenticated && !authed {
			l.LogAttrs(ctx, slog.LevelInfo, "audit", append(attrs, traceAttrs(ctx)...)...)
			return resp, err
		}
		if r, ok := req.(tenanted); ok {
			// An empty tenant is the caller's own (server.DefaultTenant
			// without authentication); log the one acted on.
			t := r.GetTenant()
			if t == "" && authed {
				t = id.Tenant
			}
			t = tenantOrDefault(t)
			attrs = append(attrs, slog.String("tenant", logText(t)))
		}
		if r, ok := req.(namespaced); ok {
			attrs = append(attrs, slog.String("namespace", logText(r.GetNamespace())))
		}
		if r, ok := req.(keyed); ok && r.GetKey() != "" {
			attrs = append(attrs, slog.String("key_hash", HashKey(r.GetKey())))
		}
		if r, ok := req.(interface{ GetKeyPrefix() string }); ok && r.GetKeyPrefix() != "" {
			attrs = append(attrs, slog.String("key_prefix_hash", HashKey(r.GetKeyPrefix())))
		}
		l.LogAttrs(ctx, slog.LevelInfo, "audit", append(attrs, traceAttrs(ctx)...)...)
		return resp, err
	}
}

func traceAttrs(ctx context.Context) []slog.Attr {
	if sc := traceFields(ctx); sc != nil {
		return []slog.Attr{slog.Any(sc[0].(string), sc[1])}
	}
	return nil
}
