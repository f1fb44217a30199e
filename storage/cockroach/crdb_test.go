package cockroach

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/idemhq/idem/storage/storagetest"
)

// startCockroach runs `cockroach start-single-node --insecure` in a temporary
// directory for the test and returns its SQL URL.
func startCockroach(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("COCKROACH_BINARY")
	if bin == "" {
		t.Skip("set COCKROACH_BINARY to a cockroach executable to run the suite against CockroachDB")
	}
	dir := t.TempDir()
	urlFile := filepath.Join(dir, "sql-url")
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "start-single-node", "--insecure",
		"--store="+filepath.Join(dir, "data"),
		"--listen-addr=127.0.0.1:0", "--http-addr=127.0.0.1:0",
		"--listening-url-file="+urlFile,
		"--log-dir="+filepath.Join(dir, "logs"))
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting %s: %v", bin, err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(2 * time.Minute)
	for {
		b, err := os.ReadFile(urlFile)
		if err == nil && strings.HasSuffix(string(b), "\n") {
			return withParams(t, strings.TrimSpace(string(b)), "sslmode", "disable")
		}
		if time.Now().After(deadline) {
			t.Fatalf("cockroach did not write %s within 2 minutes", urlFile)
		}
		time.Sleep(100 * time.Millisecond) // waiting for a child process, not for time to pass
	}
}

// TestCockroach runs the conformance suite and the multi-replica tests
// against a real CockroachDB node.
func TestCockroach(t *testing.T) {
	crdb := startCockroach(t)
	h := harness{base: func(testing.TB) string { return crdb }}
	t.Run("Dialect", func(t *testing.T) {
		s := openTest(t, migratedURL(t, crdb))
		defer s.Close()
		if s.Dialect() != DialectCockroach {
			t.Errorf("Dialect() = %q, want %q (version %q)", s.Dialect(), DialectCockroach, s.ServerVersion())
		}
		var ttl string
		if err := s.pool.QueryRow(testCtx(t), `SELECT coalesce((SELECT string_agg(o, ',') FROM unnest(reloptions) AS o), '') FROM pg_class WHERE relname = 'idem_records' LIMIT 1`).Scan(&ttl); err != nil {
			t.Fatalf("reading table options: %v", err)
		}
		if !strings.Contains(ttl, "ttl_expiration_expression") {
			t.Errorf("idem_records options = %q, want row-level TTL on expires_at", ttl)
		}
	})
	t.Run("Conformance", func(t *testing.T) { storagetest.RunConformanceTests(t, h) })
}
