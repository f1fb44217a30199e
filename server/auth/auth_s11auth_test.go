package auth

import (
	"context"
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A certificate that expires while its connection stays open must stop
// working at call time: the handshake checked it only once.
func TestExpiredCertRefusedOnOpenConnection_s11auth(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	f := newFixture(t, "", nil)
	_, _, cert := f.ca.issue(t, leafOpts{cn: "svc", uris: []string{"spiffe://idem/tenant/a"}, notAfter: f.clock.Now().Add(time.Hour)})
	conn := f.dial(t, &cert, nil)
	if got, err := lookup(ctx, conn, "", ""); err != nil || got != "a" {
		t.Fatalf("Lookup() before expiry = %q, %v, want a", got, err)
	}
	f.clock.Advance(2 * time.Hour)
	if _, err := lookup(ctx, conn, "", ""); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Lookup() on an open connection after the certificate expired error = %v, want Unauthenticated", err)
	}
}

// Removing a client CA from the bundle revokes what it signed, on open
// connections too.
func TestRemovedClientCARefusedOnOpenConnection_s11auth(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	f := newFixture(t, "", nil)
	_, _, cert := f.ca.issue(t, leafOpts{cn: "svc", uris: []string{"spiffe://idem/tenant/a"}})
	conn := f.dial(t, &cert, nil)
	if got, err := lookup(ctx, conn, "", ""); err != nil || got != "a" {
		t.Fatalf("Lookup() before CA rotation = %q, %v, want a", got, err)
	}
	writeFile(t, f.dir, "ca.crt", newCA(t, "new client CA").pem)
	if err := f.auth.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := lookup(ctx, conn, "", ""); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Lookup() on an open connection after its CA was removed error = %v, want Unauthenticated", err)
	}
	// Putting the CA back (alongside the new one) restores it.
	writeFile(t, f.dir, "ca.crt", append(newCA(t, "other").pem, f.ca.pem...))
	if err := f.auth.Reload(); err != nil {
		t.Fatal(err)
	}
	if got, err := lookup(ctx, conn, "", ""); err != nil || got != "a" {
		t.Fatalf("Lookup() after the CA came back = %q, %v, want a", got, err)
	}
}

// An operator who pastes the token itself instead of its hash must not
// find the secret in the reload error (which idemd logs).
func TestTokensFileErrorDoesNotEchoToken_s11auth(t *testing.T) {
	tok, line, err := MintToken("a", RoleClient, time.Time{}, "svc")
	if err != nil {
		t.Fatal(err)
	}
	rest := strings.SplitN(line, " ", 2)[1]
	for _, file := range []string{
		tok + " " + rest,                        // token instead of its hash
		"sha256:" + tok + " " + rest,            // token after the prefix
		HashToken(tok) + " " + tok + " " + rest, // token as a stray field
		"revoked-cert:" + strings.Repeat("0", 64) + " " + tok,
		"cert:x " + tok + " tenant=a role=client",
	} {
		_, err := parseTable([]byte(file))
		if err == nil {
			t.Fatalf("parseTable(%q) error = nil, want an error", file)
		}
		if strings.Contains(err.Error(), tok) || strings.Contains(err.Error(), strings.TrimPrefix(tok, tokenPrefix)) {
			t.Errorf("parseTable() error %q shows the token", err)
		}
	}
}

// Every name MintToken accepts yields a line that parses back to the
// same identity; the others are refused when minting, not at the next
// reload (where a broken file blocks every later revocation).
func TestMintTokenNameRoundTrips_s11auth(t *testing.T) {
	for _, name := range []string{"ops", "a\u00a0b", "a\u0085b", "a\vb", "a\fb", "a\u2003b", "a\x1bb", "a\u200bb", "a\xffb"} {
		tok, line, err := MintToken("t", RoleClient, time.Time{}, name)
		if err != nil {
			continue
		}
		tab, err := parseTable([]byte(line))
		if err != nil {
			t.Errorf("MintToken(name %q) line %q does not parse: %v", name, line, err)
			continue
		}
		e, ok := tab.tokens[sha256.Sum256([]byte(tok))]
		if !ok || e.id != (Identity{Tenant: "t", Role: RoleClient, Subject: "token:" + name}) {
			t.Errorf("MintToken(name %q) entry = %+v, %v", name, e, ok)
		}
	}
	if _, _, err := MintToken("t", RoleClient, time.Time{}, "a\x1bb"); err == nil {
		t.Errorf("MintToken(name with ESC) error = nil, want an error (the name is logged)")
	}
}
