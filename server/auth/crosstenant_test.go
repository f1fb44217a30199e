package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/server/auth"
	"github.com/idemhq/idem/storage/memory"
)

// selfSigned writes a server certificate for localhost and returns its paths and pool.
func selfSigned(t *testing.T, dir string) (certPath, keyPath string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "idemd"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certPath, keyPath = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(certPath, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	return certPath, keyPath, pool
}

// TestTenantIsolation runs the real service with authentication on:
// tenant A (with the admin role, so admin RPCs reach the service) tries
// every RPC on tenant B's records and on absent keys, and gets the same
// PERMISSION_DENIED each time, while B's records stay as they were.
func TestTenantIsolation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dir := t.TempDir()
	certPath, keyPath, pool := selfSigned(t, dir)
	tokA, lineA, _ := auth.MintToken("a", auth.RoleAdmin, time.Time{}, "a-ops")
	tokB, lineB, _ := auth.MintToken("b", auth.RoleAdmin, time.Time{}, "b-ops")
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte(lineA+"\n"+lineB+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := auth.DefaultConfig()
	cfg.TLSCert, cfg.TLSKey, cfg.TokensFile = certPath, keyPath, tokens
	discard := slog.New(slog.DiscardHandler)
	a, err := auth.New(cfg, auth.WithLogger(discard))
	if err != nil {
		t.Fatal(err)
	}
	store := memory.New()
	defer store.Close()
	svc, err := server.New(store, server.WithTenantFunc(auth.TenantFunc), server.WithLogger(discard))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	gs := server.NewGRPCServer(svc, append(a.ServerOptions(),
		grpc.ChainUnaryInterceptor(a.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(a.StreamServerInterceptor()))...)
	lis := bufconn.Listen(1 << 20)
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "localhost"})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	data, admin := idemv1.NewIdempotencyServiceClient(conn), idemv1.NewAdminServiceClient(conn)
	asA := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tokA)
	asB := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tokB)

	// B's records: one completed, one held.
	const ns = "/pay.v1.Pay/Charge"
	fp := []byte("fp")
	for _, k := range []string{"done", "held"} {
		r, err := data.Reserve(asB, &idemv1.ReserveRequest{Namespace: ns, Key: k, Fingerprint: fp})
		if err != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
			t.Fatalf("B Reserve(%s) = %v, %v", k, r, err)
		}
	}
	if _, err := data.Complete(asB, &idemv1.CompleteRequest{Namespace: ns, Key: "done", Token: 1, Result: &idemv1.Result{Body: []byte("paid")}}); err != nil {
		t.Fatalf("B Complete() error = %v", err)
	}
	snapshot := func() map[string]*idemv1.Record {
		recs := map[string]*idemv1.Record{}
		for _, k := range []string{"done", "held"} {
			r, err := data.Lookup(asB, &idemv1.LookupRequest{Namespace: ns, Key: k})
			if err != nil {
				t.Fatalf("B Lookup(%s) error = %v", k, err)
			}
			recs[k] = r.GetRecord()
		}
		return recs
	}
	before := snapshot()

	lease := durationpb.New(time.Minute)
	calls := map[string]func(key string) error{
		"Reserve": func(k string) error {
			_, err := data.Reserve(asA, &idemv1.ReserveRequest{Tenant: "b", Namespace: ns, Key: k, Fingerprint: fp})
			return err
		},
		"Complete": func(k string) error {
			_, err := data.Complete(asA, &idemv1.CompleteRequest{Tenant: "b", Namespace: ns, Key: k, Token: 1, Result: &idemv1.Result{Body: []byte("stolen")}})
			return err
		},
		"Release": func(k string) error {
			_, err := data.Release(asA, &idemv1.ReleaseRequest{Tenant: "b", Namespace: ns, Key: k, Token: 1})
			return err
		},
		"ExtendLease": func(k string) error {
			_, err := data.ExtendLease(asA, &idemv1.ExtendLeaseRequest{Tenant: "b", Namespace: ns, Key: k, Token: 1, LeaseTtl: lease})
			return err
		},
		"Checkpoint": func(k string) error {
			_, err := data.Checkpoint(asA, &idemv1.CheckpointRequest{Tenant: "b", Namespace: ns, Key: k, Token: 1, Phase: "x"})
			return err
		},
		"Lookup": func(k string) error {
			_, err := data.Lookup(asA, &idemv1.LookupRequest{Tenant: "b", Namespace: ns, Key: k})
			return err
		},
		"BatchReserve": func(k string) error {
			_, err := data.BatchReserve(asA, &idemv1.BatchReserveRequest{Tenant: "b", Namespace: ns, Items: []*idemv1.BatchReserveRequest_Item{{Key: k, Fingerprint: fp}}})
			return err
		},
		"BatchComplete": func(k string) error {
			_, err := data.BatchComplete(asA, &idemv1.BatchCompleteRequest{Tenant: "b", Namespace: ns, Items: []*idemv1.BatchCompleteRequest_Item{{Key: k, Token: 1}}})
			return err
		},
		"DeleteKey": func(k string) error {
			_, err := admin.DeleteKey(asA, &idemv1.DeleteKeyRequest{Tenant: "b", Namespace: ns, Key: k})
			return err
		},
		"ForceRelease": func(k string) error {
			_, err := admin.ForceRelease(asA, &idemv1.ForceReleaseRequest{Tenant: "b", Namespace: ns, Key: k})
			return err
		},
		"ListKeys": func(k string) error {
			_, err := admin.ListKeys(asA, &idemv1.ListKeysRequest{Tenant: "b", Namespace: ns, KeyPrefix: k})
			return err
		},
		"Stats": func(string) error {
			_, err := admin.Stats(asA, &idemv1.StatsRequest{Tenant: "b", Namespace: ns})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			var first *status.Status
			for _, k := range []string{"done", "held", "absent"} {
				st := status.Convert(call(k))
				if st.Code() != codes.PermissionDenied {
					t.Fatalf("%s(tenant b, key %s) = %v, want PermissionDenied", name, k, st.Err())
				}
				if first == nil {
					first = st
				} else if !proto.Equal(st.Proto(), first.Proto()) {
					t.Errorf("%s answers differ by key: %v vs %v (must not hint whether a key exists)", name, st.Proto(), first.Proto())
				}
			}
		})
	}
	after := snapshot()
	for k := range before {
		if !proto.Equal(before[k], after[k]) {
			t.Errorf("B's record %s changed:\nbefore %v\nafter  %v", k, before[k], after[k])
		}
	}

	// A's own tenant is another key space: B's key is absent there.
	if _, err := data.Lookup(asA, &idemv1.LookupRequest{Namespace: ns, Key: "done"}); status.Code(err) != codes.NotFound {
		t.Errorf("A Lookup(own tenant, B's key) error = %v, want NotFound", err)
	}
	r, err := data.Reserve(asA, &idemv1.ReserveRequest{Namespace: ns, Key: "done", Fingerprint: fp})
	if err != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED || r.GetRecord().GetTenant() != "a" {
		t.Errorf("A Reserve(own tenant, B's key) = %v, %v, want RESERVED in tenant a", r, err)
	}
	list, err := admin.ListKeys(asA, &idemv1.ListKeysRequest{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range list.GetRecords() {
		if rec.GetTenant() != "a" {
			t.Errorf("A ListKeys() returned %s", fmt.Sprint(rec))
		}
	}
	if len(list.GetRecords()) != 1 {
		t.Errorf("A ListKeys() = %d records, want 1", len(list.GetRecords()))
	}
	if !proto.Equal(snapshot()["done"], before["done"]) {
		t.Errorf("B's completed record changed after A used the same key in its own tenant")
	}
}
