package ctl

import (
	"strings"
	"testing"
)

// idemctl speaks plaintext to loopback by default; against an idemd with
// TLS the bare "error reading server preface: EOF" read as if idemd were
// down.
func TestPlaintextToTLSServerSaysSo(t *testing.T) {
	ctx := testContext(t)
	pki := newPKI(t)
	addr := startTLSServer(t, pki.serverTLS)
	r := run(ctx, t, nil, "--addr", addr, "health")
	if r.code != ExitUnreachable || !strings.Contains(r.stderr, "serving TLS? give --tls-ca") || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("plaintext health against TLS: exit %d stderr %q; want exit %d and one line suggesting --tls-ca", r.code, r.stderr, ExitUnreachable)
	}
	// A server that is simply down gets no TLS hint.
	r = run(ctx, t, nil, "--addr", closedAddr(t), "health")
	if strings.Contains(r.stderr, "TLS") {
		t.Fatalf("health against a closed port: stderr %q, want no TLS hint", r.stderr)
	}
}
