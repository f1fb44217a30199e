package auth

import "context"

// Role is what an identity may do.
type Role string

const (
	// RoleClient may call idem.v1.IdempotencyService for its tenant.
	RoleClient Role = "client"
	// RoleAdmin may also call idem.v1.AdminService for its tenant.
	RoleAdmin Role = "admin"
)

func parseRole(s string) (Role, bool) {
	switch Role(s) {
	case RoleClient, RoleAdmin:
		return Role(s), true
	}
	return "", false
}

// Identity is an authenticated caller.
type Identity struct {
	// Tenant is the only tenant the caller may act for.
	Tenant string
	Role   Role
	// Subject names the credential for logs and audit lines: the
	// certificate's URI SAN or CN, or "token:" and the token's name or hash
	// prefix. Never the secret itself.
	Subject string
}

type identityKey struct{}

// NewContext returns ctx carrying id.
func NewContext(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the caller's identity, if the auth interceptor put one there.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

type callerSlot struct {
	id Identity
	ok bool
}

type callerSlotKey struct{}

// WithCallerSlot returns ctx with room for the caller Authenticate finds,
// and a function that reads it once the call is over. The audit log sits
// outside the auth interceptor, so that it sees the calls auth refuses,
// and never sees the context auth passes inward.
func WithCallerSlot(ctx context.Context) (context.Context, func() (Identity, bool)) {
	s := &callerSlot{}
	return context.WithValue(ctx, callerSlotKey{}, s), func() (Identity, bool) { return s.id, s.ok }
}

func fillCallerSlot(ctx context.Context, id Identity) {
	if s, ok := ctx.Value(callerSlotKey{}).(*callerSlot); ok {
		s.id, s.ok = id, true
	}
}
