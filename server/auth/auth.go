package auth

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/jonboulle/clockwork"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/idemhq/idem"
	"github.com/idemhq/idem/internal/logthrottle"
)

// Method prefixes the interceptors treat specially.
const (
	adminPrefix  = "/idem.v1.AdminService/"
	healthPrefix = "/grpc.health.v1.Health/"
)

// errorDomain and the reasons match package server's, so the client maps
// these statuses to idem.ErrUnauthenticated and idem.ErrPermissionDenied.
const (
	errorDomain            = idem.ErrorDomain
	reasonUnauthenticated  = "UNAUTHENTICATED"
	reasonPermissionDenied = "PERMISSION_DENIED"
)

// Option configures an Authenticator.
type Option func(*Authenticator)

// WithClock sets the clock that decides token and certificate expiry.
func WithClock(c clockwork.Clock) Option { return func(a *Authenticator) { a.clock = c } }

// WithLogger sets where refused credentials and reloads are logged.
func WithLogger(l *slog.Logger) Option { return func(a *Authenticator) { a.log = l } }

// WithRejectHook is called with "unauthenticated" or "permission_denied"
// for every refused call (idemd counts them in idem_rejected_total).
func WithRejectHook(f func(reason string)) Option { return func(a *Authenticator) { a.onReject = f } }

// Authenticator holds the credentials state and serves the interceptors.
// Its state is swapped atomically on reload, so calls never see half a reload.
type Authenticator struct {
	cfg      Config
	clock    clockwork.Clock
	log      *slog.Logger
	onReject func(string)
	quiet    *logthrottle.Throttle // refusal lines, which a misconfigured client can send at any rate

	tls   atomic.Pointer[tls.Config] // nil without TLS
	table atomic.Pointer[table]

	mu     sync.Mutex // serializes reloads
	stamps map[string]fileStamp
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// New loads the certificates and the tokens file named by cfg.
func New(cfg Config, opts ...Option) (*Authenticator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Authenticator{cfg: cfg, clock: clockwork.NewRealClock(), log: slog.Default(), onReject: func(string) {}}
	for _, o := range opts {
		o(a)
	}
	a.quiet = logthrottle.New(logthrottle.DefaultBurst, logthrottle.DefaultWindow, a.clock.Now)
	if err := a.Reload(); err != nil {
		return nil, err
	}
	return a, nil
}

// Enabled reports whether callers must authenticate.
func (a *Authenticator) Enabled() bool { return a.cfg.Enabled() }

// Reload reads the certificates, client CA and tokens file again. On error
// the previous state stays in force.
func (a *Authenticator) Reload() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	stamps := map[string]fileStamp{}
	read := func(path string) ([]byte, error) {
		// Stamp first: a rewrite between the stamp and the read then
		// shows as a change at the next check, where stamping after the
		// read would record the new file's stamp for the old contents.
		if fi, err := os.Stat(path); err == nil {
			stamps[path] = fileStamp{fi.ModTime(), fi.Size()}
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("idem: read %s: %w", path, err)
		}
		return b, nil
	}
	var tlsCfg *tls.Config
	var anchors map[string]bool
	if a.cfg.TLS() {
		certPEM, err := read(a.cfg.TLSCert)
		if err != nil {
			return err
		}
		keyPEM, err := read(a.cfg.TLSKey)
		if err != nil {
			return err
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return fmt.Errorf("idem: load TLS key pair %s, %s: %w", a.cfg.TLSCert, a.cfg.TLSKey, err)
		}
		tlsCfg = &tls.Config{
			Certificates: []tls.Certificate{cert},
			MinVersion:   tls.VersionTLS12,
			NextProtos:   []string{"h2"},
			Time:         a.clock.Now,
		}
		if a.cfg.TLSClientCA != "" {
			caPEM, err := read(a.cfg.TLSClientCA)
			if err != nil {
				return err
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(caPEM) {
				return fmt.Errorf("idem: no certificate found in client CA file %s", a.cfg.TLSClientCA)
			}
			tlsCfg.ClientCAs = pool
			anchors = certsDER(caPEM)
			// With tokens as well, a caller may come without a certificate.
			tlsCfg.ClientAuth = tls.RequireAndVerifyClientCert
			if a.cfg.TokensFile != "" {
				tlsCfg.ClientAuth = tls.VerifyClientCertIfGiven
			}
		}
	}
	tab := emptyTable()
	if a.cfg.TokensFile != "" {
		data, err := read(a.cfg.TokensFile)
		if err != nil {
			return err
		}
		if tab, err = parseTable(data); err != nil {
			return fmt.Errorf("%w (in %s)", err, a.cfg.TokensFile)
		}
	}
	tab.anchors = anchors
	a.tls.Store(tlsCfg)
	a.table.Store(tab)
	a.stamps = stamps
	return nil
}

// changed reports whether any loaded file's size or modification time moved.
func (a *Authenticator) changed() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for path, old := range a.stamps {
		fi, err := os.Stat(path)
		if err != nil || !fi.ModTime().Equal(old.mod) || fi.Size() != old.size {
			return true
		}
	}
	return false
}

// Watch reloads on SIGHUP and, every ReloadInterval, when a file changed,
// until ctx ends. Failed reloads are logged and keep the previous state.
func (a *Authenticator) Watch(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	a.watch(ctx, hup)
}

// watch is Watch with the signals from hup.
func (a *Authenticator) watch(ctx context.Context, hup <-chan os.Signal) {
	var tick <-chan time.Time
	if a.cfg.ReloadInterval > 0 {
		t := a.clock.NewTicker(a.cfg.ReloadInterval)
		defer t.Stop()
		tick = t.Chan()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			// idemd's SIGHUP also reloads its policy; without TLS or
			// credentials there is nothing here to reload or to report.
			// TLS alone still has a certificate to rotate.
			if !a.Enabled() && !a.cfg.TLS() {
				continue
			}
		case <-tick:
			if !a.changed() {
				continue
			}
		}
		if err := a.Reload(); err != nil {
			a.log.ErrorContext(ctx, "credentials reload failed; keeping the previous ones", "err", err)
			continue
		}
		a.log.InfoContext(ctx, "credentials reloaded")
	}
}

// TLSConfig is the server's TLS configuration, or nil without TLS. Every
// handshake uses the latest reloaded certificate and client CA.
func (a *Authenticator) TLSConfig() *tls.Config {
	if a.tls.Load() == nil {
		return nil
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return a.tls.Load(), nil
		},
	}
}

// ServerOptions are the grpc.ServerOptions for TLS (none without it).
func (a *Authenticator) ServerOptions() []grpc.ServerOption {
	c := a.TLSConfig()
	if c == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(c))}
}

// errRefused is what every refused credential looks like to the caller.
var errRefused = errors.New("idem: missing or invalid credentials")

// Authenticate finds the caller of a call to method. Health checks pass
// without credentials and without an identity.
func (a *Authenticator) Authenticate(ctx context.Context, method string) (context.Context, error) {
	if !a.Enabled() || strings.HasPrefix(method, healthPrefix) {
		return ctx, nil
	}
	id, why := a.identify(ctx)
	if why != "" {
		// The log line must not show the tenant the request claims.
		logging.AddFields(ctx, logging.Fields{"tenant", ""})
		a.onReject("unauthenticated")
		a.logRefusal(ctx, "credentials refused", "method", method, "why", why, "peer", peerAddr(ctx))
		return ctx, statusErr(codes.Unauthenticated, errRefused.Error(), reasonUnauthenticated)
	}
	// The logging interceptor, further out, reports who called.
	logging.AddFields(ctx, logging.Fields{"tenant", id.Tenant, "subject", id.Subject})
	fillCallerSlot(ctx, id)
	if strings.HasPrefix(method, adminPrefix) && id.Role != RoleAdmin {
		a.onReject("permission_denied")
		a.logRefusal(ctx, "admin call refused to client role", "method", method, "tenant", id.Tenant, "subject", id.Subject, "peer", peerAddr(ctx))
		return ctx, statusErr(codes.PermissionDenied, idem.ErrPermissionDenied.Error(), reasonPermissionDenied)
	}
	return NewContext(ctx, id), nil
}

// logRefusal writes a refusal line unless too many of its kind were
// written this second; the next one written counts those left out
// (idem_rejected_total counts them all).
func (a *Authenticator) logRefusal(ctx context.Context, msg string, args ...any) {
	ok, leftOut := a.quiet.Allow(msg)
	if !ok {
		return
	}
	if leftOut > 0 {
		args = append(args, "suppressed", leftOut)
	}
	a.log.InfoContext(ctx, msg, args...)
}

// peerAddr is where a call came from: for a refused credential often the
// only clue to who sent it.
func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// identify returns the caller's identity, or why it has none (for the log).
func (a *Authenticator) identify(ctx context.Context) (Identity, string) {
	tab := a.table.Load()
	now := a.clock.Now()
	var tokID *Identity
	md, _ := metadata.FromIncomingContext(ctx)
	switch vals := md.Get("authorization"); len(vals) {
	case 0:
	case 1:
		scheme, tok, ok := strings.Cut(vals[0], " ")
		if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(tok) == "" {
			return Identity{}, "authorization is not a bearer token"
		}
		e, ok := tab.tokens[sha256.Sum256([]byte(strings.TrimSpace(tok)))]
		if !ok {
			return Identity{}, "unknown or revoked token"
		}
		if !e.expires.IsZero() && !now.Before(e.expires) {
			return Identity{}, "expired token " + e.id.Subject
		}
		tokID = &e.id
	default:
		return Identity{}, "more than one authorization header"
	}
	certID, why := a.certIdentity(ctx, tab, now)
	switch {
	case tokID != nil && certID != nil && certID.Tenant != tokID.Tenant:
		return Identity{}, "certificate and token name different tenants"
	case tokID != nil:
		return *tokID, ""
	case certID != nil:
		return *certID, ""
	case why != "":
		return Identity{}, why
	}
	return Identity{}, "no credentials"
}

// certIdentity maps a verified client certificate to an identity. It
// returns nil and no reason when the caller sent no certificate.
func (a *Authenticator) certIdentity(ctx context.Context, tab *table, now time.Time) (*Identity, string) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, ""
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return nil, ""
	}
	if len(info.State.VerifiedChains) == 0 {
		return nil, "client certificate not verified"
	}
	leaf := info.State.PeerCertificates[0]
	if tab.revoked[sha256.Sum256(leaf.Raw)] {
		return nil, "revoked client certificate " + leaf.Subject.String()
	}
	// The handshake verified the chain once; a connection outlives both
	// the certificate's validity and the CA bundle it was checked against.
	if !anyChainValid(info.State.VerifiedChains, tab.anchors, now) {
		return nil, "client certificate expired or its CA no longer trusted " + leaf.Subject.String()
	}
	for _, u := range leaf.URIs {
		if id, ok := tab.certs[u.String()]; ok {
			return &id, ""
		}
	}
	if cn := leaf.Subject.CommonName; cn != "" {
		if id, ok := tab.certs[cn]; ok {
			return &id, ""
		}
	}
	if p := a.cfg.TenantURIPrefix; p != "" {
		for _, u := range leaf.URIs {
			rest, ok := strings.CutPrefix(u.String(), p)
			if !ok {
				continue
			}
			role := RoleClient
			if t, ok := strings.CutSuffix(rest, "/admin"); ok {
				rest, role = t, RoleAdmin
			}
			if checkTenant(rest) != nil {
				return nil, "client certificate URI names an invalid tenant"
			}
			return &Identity{Tenant: rest, Role: role, Subject: u.String()}, ""
		}
	}
	if a.cfg.TenantFromCN {
		if cn := leaf.Subject.CommonName; checkTenant(cn) == nil {
			return &Identity{Tenant: cn, Role: RoleClient, Subject: "CN=" + cn}, ""
		}
	}
	return nil, "client certificate maps to no tenant"
}

// anyChainValid reports whether one of the chains the handshake verified
// is still valid at now and still ends at a CA of the current client CA
// bundle (anchors, by DER).
func anyChainValid(chains [][]*x509.Certificate, anchors map[string]bool, now time.Time) bool {
next:
	for _, chain := range chains {
		if len(chain) == 0 || !anchors[string(chain[len(chain)-1].Raw)] {
			continue
		}
		for _, c := range chain {
			if now.Before(c.NotBefore) || now.After(c.NotAfter) {
				continue next
			}
		}
		return true
	}
	return false
}

// certsDER returns the DER of every certificate in a PEM bundle, the way
// x509.CertPool.AppendCertsFromPEM reads it.
func certsDER(data []byte) map[string]bool {
	set := map[string]bool{}
	for len(data) > 0 {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" || len(b.Headers) != 0 {
			continue
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			set[string(c.Raw)] = true
		}
	}
	return set
}

func statusErr(c codes.Code, msg, reason string) error {
	st, err := status.New(c, msg).WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: errorDomain})
	if err != nil {
		return status.Error(c, msg)
	}
	return st.Err()
}

// UnaryServerInterceptor authenticates unary calls.
func (a *Authenticator) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := a.Authenticate(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor authenticates streaming calls.
func (a *Authenticator) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := a.Authenticate(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		w := middleware.WrapServerStream(ss)
		w.WrappedContext = ctx
		return handler(srv, w)
	}
}

// TenantFunc is the package's TenantFunc that also counts and logs the
// requests it refuses for naming another tenant, as Authenticate does for
// refused credentials: a client probing other tenants is what
// IdemAuthFailures is for.
func (a *Authenticator) TenantFunc(ctx context.Context, requested string) (string, error) {
	t, err := TenantFunc(ctx, requested)
	if errors.Is(err, idem.ErrPermissionDenied) {
		id, _ := FromContext(ctx)
		method, _ := grpc.Method(ctx)
		a.onReject("permission_denied")
		a.logRefusal(ctx, "request for another tenant refused", "method", method, "tenant", id.Tenant, "subject", id.Subject,
			"requested_tenant", requested, "peer", peerAddr(ctx))
	}
	return t, err
}

// TenantFunc resolves a request's tenant when authentication is on (it is
// a server.TenantFunc): empty means the caller's own tenant, the caller's
// tenant is accepted, and any other is idem.ErrPermissionDenied — decided
// before any store is read, so the answer says nothing about the key. A
// call without an identity (the interceptor did not run) is refused.
func TenantFunc(ctx context.Context, requested string) (string, error) {
	id, ok := FromContext(ctx)
	if !ok {
		return "", idem.ErrUnauthenticated
	}
	if requested != "" && requested != id.Tenant {
		return "", idem.ErrPermissionDenied
	}
	return id.Tenant, nil
}
