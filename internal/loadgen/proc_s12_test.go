package loadgen

import (
	"os"
	"path/filepath"
	"testing"
)

// An exited process that is not reaped yet (a zombie) keeps its stat file
// with frozen utime/stime: read as a live server, every phase would show
// no CPU at all.
func TestServerCPURefusesExitedProcess(t *testing.T) {
	root := t.TempDir()
	for pid, state := range map[string]string{"42": "Z", "43": "X", "44": "S"} {
		if err := os.MkdirAll(filepath.Join(root, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		stat := pid + " (idemd) " + state + " 1 42 42 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 8 0 100 0 0"
		if err := os.WriteFile(filepath.Join(root, pid, "stat"), []byte(stat), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, pid := range []int{42, 43} {
		if got, err := ProcessCPU(root, pid); err == nil {
			t.Errorf("ProcessCPU(%d) of an exited process = %v, want an error", pid, got)
		}
	}
	if _, err := ProcessCPU(root, 44); err != nil {
		t.Errorf("ProcessCPU(44) of a sleeping process: %v", err)
	}
}
