package auth

import (
	"crypto/sha256"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestReloadRaceWithRewrite: a tokens file rewritten while Reload reads it
// (say, a token removed to revoke it) must show as changed afterwards, or
// Watch never loads the new contents. Reload used to stat each file after
// reading it, and so recorded a rewrite landing in between as loaded.
func TestReloadRaceWithRewrite(t *testing.T) {
	tokA, lineA, _ := MintToken("a", RoleClient, time.Time{}, "svc")
	_, lineB, _ := MintToken("a", RoleClient, time.Time{}, "svc")
	path := filepath.Join(t.TempDir(), "tokens")
	hA := sha256.Sum256([]byte(tokA))
	for i := range 3000 {
		if err := os.WriteFile(path, []byte(lineA+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		a, err := New(Config{TokensFile: path}, WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range i % 50 {
				_ = os.Getpid()
			}
			_ = os.WriteFile(path, []byte(lineB+"\n"), 0o600) // revokes A
		}()
		_ = a.Reload()
		wg.Wait()
		_, stillA := a.table.Load().tokens[hA]
		if stillA && !a.changed() {
			t.Fatalf("iteration %d: file no longer lists token A, but A is still loaded and changed() = false: Watch will never revoke it", i)
		}
	}
}
