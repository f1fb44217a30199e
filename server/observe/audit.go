package observe

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/idemhq/idem/server/auth"
)

const adminPrefix = "/idem.v1.AdminService/"

// AuditUnaryServerInterceptor writes one "audit" line for every call of
// idem.v1.AdminService, refused or not: who (the credential's subject,
// tenant and role, or the peer address without authentication), what (the
// method, tenant, namespace and key hash or key-prefix hash), when, and
// the resulting code. Place it inside the auth interceptor, so it sees the
// caller; refusals by auth itself are logged by the logging interceptor.
func AuditUnaryServerInterceptor(l *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !strings.HasPrefix(info.FullMethod, adminPrefix) {
			return handler(ctx, req)
		}
		start := time.Now()
		resp, err := handler(ctx, req)
		attrs := make([]slog.Attr, 0, 12)
		attrs = append(attrs,
			slog.String("action", strings.TrimPrefix(info.FullMethod, adminPrefix)),
			slog.Time("at", start.UTC()),
			slog.String("code", status.Code(err).String()))
		id, authed := auth.FromContext(ctx)
		if authed {
			attrs = append(attrs, slog.String("who", id.Subject), slog.String("who_tenant", id.Tenant), slog.String("role", string(id.Role)))
		}
		if p, ok := peer.FromContext(ctx); ok {
			attrs = append(attrs, slog.String("peer", p.Addr.String()))
		}
		if r, ok := req.(tenanted); ok {
			// An empty tenant is the caller's own (server.DefaultTenant
			// without authentication); log the one acted on.
			t := r.GetTenant()
			if t == "" && authed {
				t = id.Tenant
			}
			t = tenantOrDefault(t)
			attrs = append(attrs, slog.String("tenant", t))
		}
		if r, ok := req.(namespaced); ok {
			attrs = append(attrs, slog.String("namespace", r.GetNamespace()))
		}
		if r, ok := req.(keyed); ok && r.GetKey() != "" {
			attrs = append(attrs, slog.String("key_hash", HashKey(r.GetKey())))
		}
		if r, ok := req.(interface{ GetKeyPrefix() string }); ok && r.GetKeyPrefix() != "" {
			attrs = append(attrs, slog.String("key_prefix_hash", HashKey(r.GetKeyPrefix())))
		}
		if sc := traceFields(ctx); sc != nil {
			attrs = append(attrs, slog.Any(sc[0].(string), sc[1]))
		}
		l.LogAttrs(ctx, slog.LevelInfo, "audit", attrs...)
		return resp, err
	}
}
