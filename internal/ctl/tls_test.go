package ctl

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage/memory"
)

type testPKI struct {
	dir                   string
	caFile                string
	clientCert, clientKey string
	serverTLS             *tls.Config
	otherCA               string // a CA that signed nothing here
}

func newCert(t *testing.T, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, []byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "idem test CA"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	ca, caKey, caPEM, _ := newCert(t, caTmpl, nil, nil)
	_, _, otherPEM, _ := newCert(t, &x509.Certificate{SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "other CA"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, nil, nil)
	_, _, srvPEM, srvKey := newCert(t, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "idemd"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}, ca, caKey)
	_, _, cliPEM, cliKey := newCert(t, &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "acme"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}, ca, caKey)
	srvPair, err := tls.X509KeyPair(srvPEM, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{
		dir:        dir,
		caFile:     write("ca.pem", caPEM),
		otherCA:    write("other-ca.pem", otherPEM),
		clientCert: write("client.pem", cliPEM),
		clientKey:  write("client-key.pem", cliKey),
		serverTLS: &tls.Config{Certificates: []tls.Certificate{srvPair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert,
			MinVersion: tls.VersionTLS12},
	}
}

// startTLSServer serves idem with mutual TLS on loopback.
func startTLSServer(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	store := memory.New()
	svc, err := server.New(store, server.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := server.NewGRPCServer(svc, grpc.Creds(credentials.NewTLS(cfg)))
	var wg sync.WaitGroup
	wg.Go(func() { _ = gs.Serve(lis) })
	t.Cleanup(func() {
		gs.Stop()
		wg.Wait()
		svc.Close()
		store.Close()
	})
	return lis.Addr().String()
}

func TestMutualTLS(t *testing.T) {
	ctx := testContext(t)
	pki := newPKI(t)
	addr := startTLSServer(t, pki.serverTLS)
	mtls := []string{"--addr", addr, "--tls-ca", pki.caFile, "--tls-cert", pki.clientCert, "--tls-key", pki.clientKey}

	// A TLS flag turns TLS on even on loopback.
	if r := run(ctx, t, nil, append(mtls, "health")...); r.code != 0 || r.stdout != "SERVING\n" {
		t.Fatalf("health over mTLS: exit %d out %q err %q, want SERVING", r.code, r.stdout, r.stderr)
	}
	if r := run(ctx, t, nil, append(mtls, "reserve", "ns", "k")...); r.code != 0 || !strings.Contains(r.stdout, "RESERVED") {
		t.Fatalf("reserve over mTLS: exit %d out %q err %q", r.code, r.stdout, r.stderr)
	}
	// The same from the environment.
	env := map[string]string{"IDEM_ADDR": addr, "IDEM_TLS_CA": pki.caFile, "IDEM_TLS_CERT": pki.clientCert, "IDEM_TLS_KEY": pki.clientKey, "IDEM_TENANT": "t2"}
	if r := run(ctx, t, env, "reserve", "ns", "k"); r.code != 0 || !strings.Contains(r.stdout, "t2") || !strings.Contains(r.stdout, "RESERVED") {
		t.Fatalf("reserve over mTLS configured from the environment: exit %d out %q err %q, want tenant t2 RESERVED", r.code, r.stdout, r.stderr)
	}
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		want     string
	}{
		{"no client certificate", []string{"--addr", addr, "--tls-ca", pki.caFile, "health"}, ExitCredentials, "idemctl: credentials refused: "},
		{"server not trusted", []string{"--addr", addr, "--tls-ca", pki.otherCA, "--tls-cert", pki.clientCert, "--tls-key", pki.clientKey, "health"}, ExitUnreachable, "idemctl: cannot reach idem at " + addr},
		{"plaintext to a TLS server", []string{"--addr", addr, "health"}, ExitUnreachable, "idemctl: cannot reach idem at " + addr},
		{"missing CA file", []string{"--addr", addr, "--tls-ca", filepath.Join(pki.dir, "nope.pem"), "health"}, ExitFailed, "idemctl: --tls-ca: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(ctx, t, nil, tc.args...)
			if r.code != tc.wantCode || !strings.HasPrefix(r.stderr, tc.want) || strings.Count(r.stderr, "\n") != 1 {
				t.Fatalf("idemctl %v: exit %d stderr %q; want exit %d and one line starting %q", tc.args, r.code, r.stderr, tc.wantCode, tc.want)
			}
		})
	}
}
