package auth

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/idemhq/idem"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

const defaultTestTimeout = 10 * time.Second

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoService answers Lookup with the tenant auth resolved, the way the
// real service uses TenantFunc before it reads any store.
type echoService struct {
	idemv1.UnimplementedIdempotencyServiceServer
}

func (echoService) Lookup(ctx context.Context, req *idemv1.LookupRequest) (*idemv1.LookupResponse, error) {
	tenant, err := TenantFunc(ctx, req.GetTenant())
	switch {
	case errors.Is(err, idem.ErrPermissionDenied):
		return nil, status.Error(codes.PermissionDenied, err.Error())
	case err != nil:
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	return &idemv1.LookupResponse{Record: &idemv1.Record{Tenant: tenant, Namespace: req.GetNamespace(), Key: req.GetKey()}}, nil
}

type adminService struct {
	idemv1.UnimplementedAdminServiceServer
}

func (adminService) Stats(ctx context.Context, req *idemv1.StatsRequest) (*idemv1.StatsResponse, error) {
	if _, err := TenantFunc(ctx, req.GetTenant()); err != nil {
		return nil, status.Error(codes.PermissionDenied, err.Error())
	}
	return &idemv1.StatsResponse{}, nil
}

type fixture struct {
	dir      string
	ca       *testCA // signs the server and the good clients
	cfg      Config
	auth     *Authenticator
	clock    *clockwork.FakeClock
	lis      *bufconn.Listener
	rejected []string
}

// newFixture serves the test services with TLS, optional client
// certificates and the tokens file lines given.
func newFixture(t *testing.T, tokens string, mutate func(*Config)) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), ca: newCA(t, "idem test CA"), clock: clockwork.NewFakeClockAt(time.Now())}
	certPEM, keyPEM, _ := f.ca.issue(t, leafOpts{cn: "idemd", server: true})
	f.cfg = DefaultConfig()
	f.cfg.TLSCert = writeFile(t, f.dir, "server.crt", certPEM)
	f.cfg.TLSKey = writeFile(t, f.dir, "server.key", keyPEM)
	f.cfg.TLSClientCA = writeFile(t, f.dir, "ca.crt", f.ca.pem)
	f.cfg.TokensFile = writeFile(t, f.dir, "tokens", []byte(tokens))
	if mutate != nil {
		mutate(&f.cfg)
	}
	a, err := New(f.cfg, WithClock(f.clock), WithLogger(slog.New(slog.DiscardHandler)), WithRejectHook(func(r string) { f.rejected = append(f.rejected, r) }))
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	f.auth = a
	f.lis = bufconn.Listen(1 << 20)
	srv := grpc.NewServer(append(a.ServerOptions(),
		grpc.ChainUnaryInterceptor(a.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(a.StreamServerInterceptor()))...)
	idemv1.RegisterIdempotencyServiceServer(srv, echoService{})
	idemv1.RegisterAdminServiceServer(srv, adminService{})
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(f.lis) }()
	t.Cleanup(srv.Stop)
	return f
}

// dial connects trusting roots (the fixture's CA when nil) and presenting
// client when it is not nil.
func (f *fixture) dial(t *testing.T, client *tls.Certificate, roots *x509.CertPool) *grpc.ClientConn {
	t.Helper()
	if roots == nil {
		roots = x509.NewCertPool()
		roots.AppendCertsFromPEM(f.ca.pem)
	}
	tc := &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if client != nil {
		tc.Certificates = []tls.Certificate{*client}
	}
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return f.lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func withToken(ctx context.Context, tok string) context.Context {
	if tok == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}

func lookup(ctx context.Context, conn *grpc.ClientConn, token, tenant string) (string, error) {
	resp, err := idemv1.NewIdempotencyServiceClient(conn).Lookup(withToken(ctx, token), &idemv1.LookupRequest{Tenant: tenant, Namespace: "ns", Key: "k"})
	if err != nil {
		return "", err
	}
	return resp.GetRecord().GetTenant(), nil
}

func fingerprint(c tls.Certificate) string {
	sum := sha256.Sum256(c.Certificate[0])
	return hex.EncodeToString(sum[:])
}

func TestAuthenticate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	const (
		tokA     = "token-of-tenant-a"
		tokAdmin = "token-of-admin-b"
		tokOld   = "token-expired"
	)
	f := newFixture(t, "", nil)
	_, _, certA := f.ca.issue(t, leafOpts{cn: "svc-a", uris: []string{"spiffe://idem/tenant/a"}})
	_, _, certAdmin := f.ca.issue(t, leafOpts{cn: "ops", uris: []string{"spiffe://idem/tenant/a/admin"}})
	_, _, certRegional := f.ca.issue(t, leafOpts{cn: "svc-eu", uris: []string{"spiffe://idem/tenant/europe-west1/acme"}})
	_, _, certRegionalAdmin := f.ca.issue(t, leafOpts{cn: "ops-eu", uris: []string{"spiffe://other/x", "spiffe://idem/tenant/europe-west1/acme/admin"}})
	_, _, certMapped := f.ca.issue(t, leafOpts{cn: "svc-x"})
	_, _, certUnmapped := f.ca.issue(t, leafOpts{cn: "svc-unmapped"})
	_, _, certRevoked := f.ca.issue(t, leafOpts{cn: "svc-r", uris: []string{"spiffe://idem/tenant/a"}})
	_, _, certExpired := f.ca.issue(t, leafOpts{cn: "old", uris: []string{"spiffe://idem/tenant/a"}, notAfter: time.Now().Add(-time.Hour)})
	_, _, certOtherCA := newCA(t, "rogue CA").issue(t, leafOpts{cn: "rogue", uris: []string{"spiffe://idem/tenant/a"}})

	tokens := strings.Join([]string{
		"# tenant a's service",
		HashToken(tokA) + " tenant=a role=client name=svc-a",
		HashToken(tokAdmin) + " tenant=b role=admin",
		HashToken(tokOld) + " tenant=a role=client expires=" + f.clock.Now().Add(time.Minute).UTC().Format(time.RFC3339),
		"cert:svc-x tenant=x role=client",
		"revoked-cert:" + fingerprint(certRevoked),
	}, "\n")
	if err := os.WriteFile(f.cfg.TokensFile, []byte(tokens), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.auth.Reload(); err != nil {
		t.Fatalf("Reload() error = %v", err)
	}

	tests := []struct {
		name       string
		cert       *tls.Certificate
		token      string
		tenant     string
		admin      bool
		wantTenant string
		wantCode   codes.Code
	}{
		{name: "cert URI, own tenant implied", cert: &certA, wantTenant: "a"},
		{name: "cert URI, own tenant named", cert: &certA, tenant: "a", wantTenant: "a"},
		{name: "cert URI, other tenant", cert: &certA, tenant: "b", wantCode: codes.PermissionDenied},
		{name: "cert client role on admin RPC", cert: &certA, admin: true, wantCode: codes.PermissionDenied},
		{name: "cert admin role on admin RPC", cert: &certAdmin, admin: true},
		{name: "cert admin role, other tenant", cert: &certAdmin, admin: true, tenant: "b", wantCode: codes.PermissionDenied},
		{name: "cert URI, regional tenant", cert: &certRegional, wantTenant: "europe-west1/acme"},
		{name: "cert URI, regional tenant, admin RPC", cert: &certRegional, admin: true, wantCode: codes.PermissionDenied},
		{name: "cert URI, regional admin", cert: &certRegionalAdmin, admin: true, tenant: "europe-west1/acme"},
		{name: "cert URI, regional admin on data RPC", cert: &certRegionalAdmin, wantTenant: "europe-west1/acme"},
		{name: "cert mapped by CN line", cert: &certMapped, wantTenant: "x"},
		{name: "cert mapping to no tenant", cert: &certUnmapped, wantCode: codes.Unauthenticated},
		{name: "revoked cert", cert: &certRevoked, wantCode: codes.Unauthenticated},
		{name: "expired cert", cert: &certExpired, wantCode: codes.Unavailable},
		// The client offers no certificate the server's CA list accepts.
		{name: "cert of another CA", cert: &certOtherCA, wantCode: codes.Unauthenticated},
		{name: "token", token: tokA, wantTenant: "a"},
		{name: "token, other tenant", token: tokA, tenant: "b", wantCode: codes.PermissionDenied},
		{name: "client token on admin RPC", token: tokA, admin: true, wantCode: codes.PermissionDenied},
		{name: "admin token on admin RPC", token: tokAdmin, admin: true},
		{name: "admin token on data RPC", token: tokAdmin, wantTenant: "b"},
		{name: "wrong token", token: "not-a-token", wantCode: codes.Unauthenticated},
		{name: "token not yet expired", token: tokOld, wantTenant: "a"},
		{name: "no credentials", wantCode: codes.Unauthenticated},
		{name: "no credentials, admin RPC", admin: true, wantCode: codes.Unauthenticated},
		{name: "token and cert agree", cert: &certA, token: tokA, wantTenant: "a"},
		{name: "token and cert disagree", cert: &certA, token: tokAdmin, wantCode: codes.Unauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := f.dial(t, tt.cert, nil)
			var got string
			var err error
			if tt.admin {
				_, err = idemv1.NewAdminServiceClient(conn).Stats(withToken(ctx, tt.token), &idemv1.StatsRequest{Tenant: tt.tenant})
			} else {
				got, err = lookup(ctx, conn, tt.token, tt.tenant)
			}
			if code := status.Code(err); code != tt.wantCode {
				t.Fatalf("call error = %v, want code %v", err, tt.wantCode)
			}
			if err == nil && !tt.admin && got != tt.wantTenant {
				t.Errorf("resolved tenant = %q, want %q", got, tt.wantTenant)
			}
			if tt.wantCode == codes.Unauthenticated && status.Convert(err).Message() != errRefused.Error() {
				t.Errorf("message = %q, want the same %q for every refusal", status.Convert(err).Message(), errRefused.Error())
			}
		})
	}

	t.Run("expired token", func(t *testing.T) {
		f.clock.Advance(time.Minute)
		_, err := lookup(ctx, f.dial(t, nil, nil), tokOld, "")
		if code := status.Code(err); code != codes.Unauthenticated {
			t.Fatalf("Lookup() error = %v, want Unauthenticated", err)
		}
	})
	t.Run("health needs no credentials", func(t *testing.T) {
		resp, err := healthpb.NewHealthClient(f.dial(t, nil, nil)).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("Check() = %v, %v, want SERVING", resp, err)
		}
	})
	t.Run("refusals carry ErrorInfo", func(t *testing.T) {
		_, err := lookup(ctx, f.dial(t, nil, nil), "nope", "")
		var reason string
		for _, d := range status.Convert(err).Details() {
			if ei, ok := d.(*errdetails.ErrorInfo); ok {
				reason = ei.GetReason()
			}
		}
		if reason != reasonUnauthenticated {
			t.Errorf("ErrorInfo reason = %q, want %q", reason, reasonUnauthenticated)
		}
	})
	if len(f.rejected) == 0 {
		t.Errorf("reject hook never called")
	}
}

func TestMutualTLSOnlyRequiresCertificate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	f := newFixture(t, "", func(c *Config) { c.TokensFile = ""; c.TenantFromCN = true })
	_, _, cert := f.ca.issue(t, leafOpts{cn: "tenant-cn"})
	if got, err := lookup(ctx, f.dial(t, &cert, nil), "", ""); err != nil || got != "tenant-cn" {
		t.Fatalf("Lookup() with CN cert = %q, %v, want tenant-cn", got, err)
	}
	if _, err := lookup(ctx, f.dial(t, nil, nil), "", ""); status.Code(err) != codes.Unavailable {
		t.Fatalf("Lookup() without cert error = %v, want the handshake refused (Unavailable)", err)
	}
	// A client that pushes a certificate of another CA anyway fails the handshake.
	_, _, rogue := newCA(t, "rogue CA").issue(t, leafOpts{cn: "tenant-cn"})
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(f.ca.pem)
	tc := &tls.Config{RootCAs: roots, ServerName: "localhost", GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &rogue, nil }}
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return f.lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := lookup(ctx, conn, "", ""); status.Code(err) != codes.Unavailable {
		t.Fatalf("Lookup() with a rogue CA's cert error = %v, want the handshake refused (Unavailable)", err)
	}
}

func TestReloadRevokesAndRotates(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	tokA, lineA, err := MintToken("a", RoleClient, time.Time{}, "svc-a")
	if err != nil {
		t.Fatal(err)
	}
	tokB, lineB, err := MintToken("b", RoleClient, time.Time{}, "")
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, lineA+"\n", nil)
	conn := f.dial(t, nil, nil)
	if got, err := lookup(ctx, conn, tokA, ""); err != nil || got != "a" {
		t.Fatalf("Lookup(minted token) = %q, %v, want a", got, err)
	}

	// A broken file keeps the previous state.
	if err := os.WriteFile(f.cfg.TokensFile, []byte("sha256:zz tenant=a role=client\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.auth.Reload(); err == nil {
		t.Fatalf("Reload(broken file) error = nil, want an error")
	}
	if _, err := lookup(ctx, conn, tokA, ""); err != nil {
		t.Fatalf("Lookup() after failed reload error = %v, want the old token still valid", err)
	}

	// Revocation: the line is removed; the open connection is refused too.
	if err := os.WriteFile(f.cfg.TokensFile, []byte(lineB+"\n# a revoked\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !f.auth.changed() {
		t.Fatalf("changed() = false after the tokens file was rewritten")
	}
	if err := f.auth.Reload(); err != nil {
		t.Fatal(err)
	}
	if f.auth.changed() {
		t.Errorf("changed() = true right after a reload")
	}
	if _, err := lookup(ctx, conn, tokA, ""); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Lookup(revoked token) error = %v, want Unauthenticated", err)
	}
	if got, err := lookup(ctx, conn, tokB, ""); err != nil || got != "b" {
		t.Fatalf("Lookup(new token) = %q, %v, want b", got, err)
	}

	// Certificate rotation: new handshakes present the new certificate.
	ca2 := newCA(t, "rotated CA")
	certPEM, keyPEM, _ := ca2.issue(t, leafOpts{cn: "idemd", server: true})
	writeFile(t, f.dir, "server.crt", certPEM)
	writeFile(t, f.dir, "server.key", keyPEM)
	if err := f.auth.Reload(); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca2.pem)
	if _, err := lookup(ctx, f.dial(t, nil, roots), tokB, ""); err != nil {
		t.Fatalf("Lookup() trusting only the rotated CA error = %v", err)
	}
}

func TestWatchReloadsChangedFiles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	tokA, lineA, _ := MintToken("a", RoleClient, time.Time{}, "")
	f := newFixture(t, "", nil)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { f.auth.Watch(wctx); close(done) }()
	defer func() { stop(); <-done }()

	before := f.auth.table.Load()
	if err := os.WriteFile(f.cfg.TokensFile, []byte(lineA+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(f.cfg.ReloadInterval)
	for f.auth.table.Load() == before {
		select {
		case <-ctx.Done():
			t.Fatalf("tokens file not reloaded after the reload interval")
		case <-time.After(time.Millisecond):
		}
	}
	if got, err := lookup(ctx, f.dial(t, nil, nil), tokA, ""); err != nil || got != "a" {
		t.Fatalf("Lookup(token added to file) = %q, %v, want a", got, err)
	}
}

func TestTenantFunc(t *testing.T) {
	ctx := NewContext(context.Background(), Identity{Tenant: "a", Role: RoleClient})
	tests := []struct {
		name      string
		ctx       context.Context
		requested string
		want      string
		wantErr   error
	}{
		{"empty is own", ctx, "", "a", nil},
		{"own", ctx, "a", "a", nil},
		{"other", ctx, "b", "", idem.ErrPermissionDenied},
		{"prefix of own", ctx, "aa", "", idem.ErrPermissionDenied},
		{"no identity", context.Background(), "a", "", idem.ErrUnauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := TenantFunc(tt.ctx, tt.requested)
			if got != tt.want || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Errorf("TenantFunc(%q) = %q, %v, want %q, %v", tt.requested, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseTable(t *testing.T) {
	h := HashToken("x")
	tests := []struct {
		name, file, wantErr string
	}{
		{"ok", h + " tenant=a role=client expires=2030-01-01T00:00:00Z name=n\ncert:spiffe://x tenant=a role=admin\n\n# c\n", ""},
		{"bad prefix", "md5:00 tenant=a role=client", "want sha256:"},
		{"short hash", "sha256:abcd tenant=a role=client", "hex digits"},
		{"no tenant", h + " role=client", "empty tenant"},
		{"bad role", h + " tenant=a role=root", "role"},
		{"unknown field", h + " tenant=a role=client scope=all", "unknown field"},
		{"bad expiry", h + " tenant=a role=client expires=tomorrow", "RFC 3339"},
		{"duplicate", h + " tenant=a role=client\n" + h + " tenant=b role=client", "line 2"},
		{"not key=value", h + " tenant=a role=client admin", "key=value"},
		{"regional tenant", h + " tenant=us-east1/acme role=client", ""},
		{"tenant with space", "cert:x tenant=a\tb role=client", "key=value"},
		{"expires on cert line", "cert:x tenant=a role=client expires=2030-01-01T00:00:00Z", "unknown field"},
		// The API refuses these tenants in requests; a credential must not
		// carry them to the store either.
		{"tenant with a control character", h + " tenant=a\x01b role=client", "non-printable"},
		{"tenant with an invisible character", h + " tenant=a\u200bb role=client", "non-printable"},
		{"tenant not UTF-8", h + " tenant=a\xffb role=client", "UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseTable([]byte(tt.file))
			if tt.wantErr == "" && err != nil {
				t.Fatalf("parseTable() error = %v, want nil", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("parseTable() error = %v, want one containing %q", err, tt.wantErr)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "idem: ") {
				t.Errorf("error %q does not start with idem:", err)
			}
		})
	}
}

func TestMintTokenLineParses(t *testing.T) {
	exp := time.Date(2031, 2, 3, 4, 5, 6, 0, time.UTC)
	tok, line, err := MintToken("t1", RoleAdmin, exp, "ops")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(line, tok) {
		t.Fatalf("tokens-file line %q contains the secret", line)
	}
	tab, err := parseTable([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	e, ok := tab.tokens[sha256.Sum256([]byte(tok))]
	want := tokenEntry{id: Identity{Tenant: "t1", Role: RoleAdmin, Subject: "token:ops"}, expires: exp}
	if !ok || e.id != want.id || !e.expires.Equal(exp) {
		t.Errorf("entry = %+v, %v, want %+v", e, ok, want)
	}
	for _, bad := range []struct{ tenant, role, name string }{{"", "client", ""}, {"a", "root", ""}, {"a", "client", "x y"}} {
		if _, _, err := MintToken(bad.tenant, Role(bad.role), time.Time{}, bad.name); err == nil {
			t.Errorf("MintToken(%q, %q, %q) error = nil, want an error", bad.tenant, bad.role, bad.name)
		}
	}
}

func TestCheckListen(t *testing.T) {
	tests := []struct {
		addr            string
		tlsOn, insecure bool
		wantErr         bool
	}{
		{"127.0.0.1:50051", false, false, false},
		{"[::1]:50051", false, false, false},
		{"localhost:50051", false, false, false},
		{"unix:/run/idem.sock", false, false, false},
		{":50051", false, false, true},
		{"0.0.0.0:50051", false, false, true},
		{"10.0.0.5:50051", false, false, true},
		{"idem.internal:50051", false, false, true},
		{":50051", true, false, false},
		{":50051", false, true, false},
		{"no-port", false, false, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s tls=%v insecure=%v", tt.addr, tt.tlsOn, tt.insecure), func(t *testing.T) {
			err := CheckListen(tt.addr, tt.tlsOn, tt.insecure)
			if (err != nil) != tt.wantErr {
				t.Errorf("CheckListen() error = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"nothing", Config{}, true},
		{"cert without key", Config{TLSCert: "c"}, false},
		{"client CA without TLS", Config{TLSClientCA: "ca"}, false},
		{"tokens without TLS", Config{TokensFile: "t"}, true},
		{"CN mapping without client CA", Config{TLSCert: "c", TLSKey: "k", TenantFromCN: true}, false},
		{"CN mapping with client CA", Config{TLSCert: "c", TLSKey: "k", TLSClientCA: "ca", TenantFromCN: true}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() error = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

func TestRegisterFlags(t *testing.T) {
	fs := flag.NewFlagSet("idemd", flag.ContinueOnError)
	c := DefaultConfig()
	RegisterFlags(fs, &c)
	args := []string{"--tls-cert=c.pem", "--tls-key=k.pem", "--tls-client-ca=ca.pem", "--tokens-file=tokens",
		"--tenant-uri-prefix=spiffe://corp/t/", "--tenant-from-cn", "--credentials-reload-interval=1m", "--insecure"}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	want := Config{TLSCert: "c.pem", TLSKey: "k.pem", TLSClientCA: "ca.pem", TokensFile: "tokens",
		TenantURIPrefix: "spiffe://corp/t/", TenantFromCN: true, ReloadInterval: time.Minute, Insecure: true}
	if c != want {
		t.Errorf("parsed config = %+v, want %+v", c, want)
	}
}

// A certificate's CN becomes a tenant only when the API would accept it as one.
func TestTenantFromCNRefusesNonPrintable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	f := newFixture(t, "", func(c *Config) { c.TokensFile = ""; c.TenantFromCN = true })
	_, _, cert := f.ca.issue(t, leafOpts{cn: "tenant\x7fcn"})
	if got, err := lookup(ctx, f.dial(t, &cert, nil), "", ""); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Lookup() with a CN holding DEL = %q, %v, want UNAUTHENTICATED", got, err)
	}
}

// An operator with several tokens files learns which one holds the typo.
func TestTokensFileErrorNamesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "idem-tokens")
	if err := os.WriteFile(path, []byte("# ok\nnot-a-line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := New(Config{TokensFile: path}, WithLogger(slog.New(slog.DiscardHandler)))
	if err == nil || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), path) {
		t.Fatalf("New() error = %v, want it to name line 2 of %s", err, path)
	}
}
