package ctl

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/idemhq/idem/server/auth"
)

// mintJSON runs `idemctl token mint` with -o json.
func mintJSON(ctx context.Context, t *testing.T, args ...string) (r result, token, line string) {
	t.Helper()
	r = run(ctx, t, nil, append([]string{"-o", "json", "token", "mint"}, args...)...)
	if r.code != 0 {
		return r, "", ""
	}
	var got struct {
		Token string `json:"token"`
		Line  string `json:"tokens_file_line"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("token mint output %q: %v", r.stdout, err)
	}
	return r, got.Token, got.Line
}

// identityOf loads line as idemd's tokens file and authenticates token.
func identityOf(t *testing.T, line, token string) (auth.Identity, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := auth.New(auth.Config{TokensFile: path}, auth.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return auth.Identity{}, err
	}
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+token))
	ctx, err = a.Authenticate(ctx, "/idem.v1.IdempotencyService/Lookup")
	if err != nil {
		return auth.Identity{}, err
	}
	id, _ := auth.FromContext(ctx)
	return id, nil
}

// The line `token mint` prints must load into idemd and give the token
// the identity asked for; a name it cannot write back is refused at once
// (a line that breaks the tokens file stops every later revocation).
func TestTokenMintLineLoads_s11auth(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	r, tok, line := mintJSON(ctx, t, "--tenant", "eu/payments", "--role", "admin", "--name", "ops-1", "--expires", "24h")
	if r.code != 0 {
		t.Fatalf("token mint exit %d, stderr %q", r.code, r.stderr)
	}
	if !strings.HasPrefix(tok, "idem_") || len(tok) < len("idem_")+43 {
		t.Errorf("token %q: want idem_ and 256 bits of base64url", tok)
	}
	id, err := identityOf(t, line, tok)
	if want := (auth.Identity{Tenant: "eu/payments", Role: auth.RoleAdmin, Subject: "token:ops-1"}); err != nil || id != want {
		t.Fatalf("minted line %q loads as %+v, %v; want %+v", line, id, err, want)
	}
	for _, name := range []string{"a\u00a0b", "a\vb", "a\u2003b", "a\x1bb"} {
		r, tok, line := mintJSON(ctx, t, "--tenant", "a", "--name", name)
		if r.code == 0 {
			if _, err := identityOf(t, line, tok); err != nil {
				t.Errorf("token mint --name %q printed a line idemd refuses: %v", name, err)
			}
		} else if r.code != ExitUsage {
			t.Errorf("token mint --name %q exit %d, want 0 or %d", name, r.code, ExitUsage)
		}
	}
}

// An --expires too long for time.Duration arithmetic wrapped around and
// minted a token that had expired centuries ago.
func TestTokenMintHugeExpiry_s11auth(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	r, _, line := mintJSON(ctx, t, "--tenant", "a", "--expires", "2562047h47m16s")
	if r.code == ExitUsage {
		return
	}
	if r.code != 0 {
		t.Fatalf("token mint exit %d, stderr %q", r.code, r.stderr)
	}
	i := strings.Index(line, "expires=")
	if i < 0 {
		t.Fatalf("line %q has no expiry", line)
	}
	exp, err := time.Parse(time.RFC3339, strings.Fields(line[i+len("expires="):])[0])
	if err != nil || !exp.After(time.Now()) {
		t.Fatalf("token mint --expires 2562047h47m16s wrote %q (%v), want a time in the future", line, err)
	}
}
