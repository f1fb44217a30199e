package ctl

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestProbeInIdemdContainer_s12 runs the exec probe docs/operations.md
// ("TLS and probes") gives, in the environment of idemd's container: there
// IDEM_TLS_CERT and IDEM_TLS_KEY name idemd's own server certificate, and
// one issuer signs both server and client certificates. idemctl must not
// offer idemd's server certificate as its client certificate (the server
// refuses it: the probe would fail and the pod never become ready).
func TestProbeInIdemdContainer_s12(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	now := time.Now()
	ca, caKey, caPEM, _ := newCert(t, &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "issuer"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, nil, nil)
	_, _, srvPEM, srvKey := newCert(t, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "idemd"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}, ca, caKey)
	pair, err := tls.X509KeyPair(srvPEM, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	// As idemd with --tls-client-ca and --tokens-file.
	addr := startTLSServer(t, &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool,
		ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12})
	env := map[string]string{"IDEM_TLS_CERT": write("tls.crt", srvPEM), "IDEM_TLS_KEY": write("tls.key", srvKey),
		"IDEM_TLS_CLIENT_CA": write("client-ca.crt", caPEM), "IDEM_STORE": "memory://"}
	ca1 := write("ca.crt", caPEM)
	r := run(ctx, t, env, "health", "--addr", addr, "--tls-ca", ca1)
	if r.code != ExitOK || r.stdout != "SERVING\n" {
		t.Fatalf("idemctl health --tls-ca CA in idemd's environment: exit %d out %q err %q, want 0 SERVING", r.code, r.stdout, r.stderr)
	}
}

// TestTextBodyShownAsText_s12: a text result with line breaks (a JSON file
// given to --body-file ends in a newline) is shown as text, its breaks
// escaped, not as hex as if it were binary; binary stays hex.
func TestTextBodyShownAsText_s12(t *testing.T) {
	for _, tc := range []struct {
		body, want string
	}{
		{"{\"charge\":\"ch_7\"}\n", `"{\"charge\":\"ch_7\"}\n"`},
		{"a\r\nb\tc", `"a\r\nb\tc"`},
		{"\x1b[2J", "4 bytes, hex 1b5b324a"},
		{"a\x00", "2 bytes, hex 6100"},
		// 81 bytes: the cut at 80 falls inside the last é.
		{"a" + strings.Repeat("é", 40), `"a` + strings.Repeat("é", 39) + `"… (81 bytes)`},
	} {
		if got := printable([]byte(tc.body)); got != tc.want {
			t.Errorf("printable(%q) = %s, want %s", tc.body, got, tc.want)
		}
	}
}

// A namespace or key that is not UTF-8 is a usage error naming the
// argument, before any call: the request could not be encoded.
func TestInvalidUTF8ArgumentIsUsage_s12(t *testing.T) {
	ctx := testContext(t)
	for _, args := range [][]string{
		{"reserve", "payments", "order-\xff"},
		{"lookup", "pay\xffments", "k"},
		{"list", "pay\xffments"},
		{"list", "payments", "--prefix", "o\xff"},
		{"complete", "payments", "k", "1", "--message", "m\xff"},
		{"stats", "--namespace", "n\xff"},
		{"health", "--service", "s\xff"},
		{"--tenant", "t\xff", "lookup", "payments", "k"},
	} {
		r := run(ctx, t, nil, append([]string{"--addr", closedAddr(t)}, args...)...)
		if r.code != ExitUsage || !strings.Contains(r.stderr, "not valid UTF-8") {
			t.Errorf("idemctl %q: exit %d, stderr %q; want exit %d naming the argument", args, r.code, r.stderr, ExitUsage)
		}
	}
}

// "idemctl help reserve" shows reserve's own help, as "idemctl reserve -h".
func TestHelpCommandShowsItsHelp_s12(t *testing.T) {
	ctx := testContext(t)
	want := run(ctx, t, nil, "reserve", "-h")
	got := run(ctx, t, nil, "help", "reserve")
	if got.code != ExitOK || got.stdout != want.stdout || !strings.Contains(got.stdout, "reserve") {
		t.Errorf("idemctl help reserve: exit %d, stdout %q; want reserve's own help %q", got.code, got.stdout, want.stdout)
	}
	if r := run(ctx, t, nil, "help", "nosuch"); r.code != ExitUsage {
		t.Errorf("idemctl help nosuch: exit %d, want %d", r.code, ExitUsage)
	}
}
