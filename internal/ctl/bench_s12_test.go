package ctl

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A --server-pid whose process exited but is not reaped (a crashed idemd
// under a parent that has not waited) is refused before the run, not
// measured as a server that used no CPU.
func TestBenchRefusesExitedServerPID(t *testing.T) {
	ctx := testContext(t)
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot start a child process: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Wait() })
	pid := cmd.Process.Pid
	// Go reaps only in Wait: the child stays a zombie until the cleanup.
	stat := filepath.Join("/proc", strconv.Itoa(pid), "stat")
	for {
		b, err := os.ReadFile(stat)
		if err != nil {
			t.Skipf("no %s: %v", stat, err)
		}
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 && strings.HasPrefix(string(b[i+1:]), " Z") {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("child %d never exited", pid)
		}
		time.Sleep(time.Millisecond)
	}
	r := run(ctx, t, nil, "--addr", closedAddr(t), "bench", "--count", "1", "--server-pid", strconv.Itoa(pid))
	if r.code != ExitUsage || !strings.Contains(r.stderr, "--server-pid") {
		t.Fatalf("bench --server-pid of an exited process: exit %d, stderr %q; want exit %d naming --server-pid", r.code, r.stderr, ExitUsage)
	}
}
