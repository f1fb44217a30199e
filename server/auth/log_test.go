package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// A refusal line says where the call came from (an unknown token has no
// subject) and never shows the token it was given.
func TestRefusalLogNamesPeerNotToken(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, line, err := MintToken("acme", RoleClient, time.Time{}, "")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	cfg := DefaultConfig()
	cfg.TokensFile = path
	a, err := New(cfg, WithLogger(slog.New(slog.NewJSONHandler(&buf, nil))))
	if err != nil {
		t.Fatal(err)
	}
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
