package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/idemhq/idem/server"
)

// A path given by mistake (a log, /dev/zero) fails with its size named
// instead of being read whole into memory.
func TestReadFileRefusesOversizedFile(t *testing.T) {
	for _, path := range []string{"/dev/zero", filepath.Join(t.TempDir(), "big.yaml")} {
		if path != "/dev/zero" {
			if err := os.WriteFile(path, []byte("namespaces:\n"+strings.Repeat("# filler\n", maxFileBytes/9+1)), 0o600); err != nil {
				t.Fatal(err)
			}
		} else if _, err := os.Stat(path); err != nil {
			continue
		}
		_, err := ReadFile(path, server.DefaultLimits())
		if err == nil || !strings.Contains(err.Error(), "over 1048576 bytes") {
			t.Errorf("ReadFile(%s) error = %v, want it refused as over 1 MiB", path, err)
		}
	}
}
