package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/idemhq/idem"
	"github.com/idemhq/idem/internal/logthrottle"
)

// A refusal line says where the call came from (an unknown token has no
// subject) and never shows the token it was given.
func TestRefusalLogNamesPeerNotToken(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var buf bytes.Buffer
	tok, a := loggedAuth(t, &buf)
	from := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 40000}
	const wrong = "idem_not-a-real-token-but-still-a-secret"
	for _, c := range []struct{ token, method string }{
		{wrong, "/idem.v1.IdempotencyService/Lookup"},
		{tok, "/idem.v1.AdminService/Stats"}, // client role
	} {
		cctx := peer.NewContext(ctx, &peer.Peer{Addr: from})
		cctx = metadata.NewIncomingContext(cctx, metadata.Pairs("authorization", "Bearer "+c.token))
		if _, err := a.Authenticate(cctx, c.method); err == nil {
			t.Fatalf("Authenticate(%s) accepted", c.method)
		}
	}
	out := buf.String()
	if strings.Contains(out, wrong) || strings.Contains(out, tok) {
		t.Errorf("log contains a bearer token: %s", out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("log has %d lines, want 2: %s", len(lines), out)
	}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		if m["peer"] != from.String() {
			t.Errorf("%s: peer = %v, want %s", m["msg"], m["peer"], from)
		}
	}
}

// A client hammering idemd with a revoked token gets a few refusal lines a
// second, not one per call; the next line written says how many were left
// out.
func TestRefusalLinesAreThrottled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var buf bytes.Buffer
	clk := clockwork.NewFakeClock()
	rejected := 0
	_, a := loggedAuth(t, &buf, WithClock(clk), WithRejectHook(func(string) { rejected++ }))
	refuse := func(n int) {
		for range n {
			cctx := metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer idem_revoked"))
			if _, err := a.Authenticate(cctx, "/idem.v1.IdempotencyService/Reserve"); err == nil {
				t.Fatal("Authenticate accepted an unknown token")
			}
		}
	}
	refuse(100)
	clk.Advance(time.Second)
	refuse(1)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if want := logthrottle.DefaultBurst + 1; len(lines) != want {
		t.Fatalf("log has %d lines for 101 refusals, want %d", len(lines), want)
	}
	var last map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
		t.Fatal(err)
	}
	if want := float64(100 - logthrottle.DefaultBurst); last["suppressed"] != want {
		t.Errorf("last line's suppressed = %v, want %v", last["suppressed"], want)
	}
	if rejected != 101 {
		t.Errorf("reject hook called %d times, want 101 (the metric counts every refusal)", rejected)
	}
}

// loggedAuth is an Authenticator with one client token of tenant acme (tok)
// that logs JSON into buf.
func loggedAuth(t *testing.T, buf *bytes.Buffer, opts ...Option) (tok string, a *Authenticator) {
	t.Helper()
	tok, line, err := MintToken("acme", RoleClient, time.Time{}, "")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.TokensFile = path
	a, err = New(cfg, append([]Option{WithLogger(slog.New(slog.NewJSONHandler(buf, nil)))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return tok, a
}

// TestOtherTenantRefusalIsCounted: a request naming another tenant is
// refused PERMISSION_DENIED after its credentials were accepted; it was
// neither counted in idem_rejected_total nor logged, so a client probing
// other tenants never fired IdemAuthFailures.
func TestOtherTenantRefusalIsCounted(t *testing.T) {
	var buf bytes.Buffer
	var rejected []string
	_, a := loggedAuth(t, &buf, WithRejectHook(func(r string) { rejected = append(rejected, r) }))
	ctx := NewContext(context.Background(), Identity{Tenant: "acme", Subject: "svc-a", Role: RoleClient})
	if _, err := a.TenantFunc(ctx, "acme"); err != nil {
		t.Fatalf("TenantFunc(own) = %v", err)
	}
	if _, err := a.TenantFunc(ctx, "globex"); !errors.Is(err, idem.ErrPermissionDenied) {
		t.Fatalf("TenantFunc(other) = %v, want ErrPermissionDenied", err)
	}
	if len(rejected) != 1 || rejected[0] != "permission_denied" {
		t.Errorf("rejected = %q, want one permission_denied", rejected)
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("log %q: %v", buf.String(), err)
	}
	if m["msg"] != "request for another tenant refused" || m["tenant"] != "acme" || m["requested_tenant"] != "globex" || m["subject"] != "svc-a" {
		t.Errorf("log line = %v", m)
	}
}
