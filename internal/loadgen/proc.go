package loadgen

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// clockTicks is Linux's USER_HZ, the unit of utime and stime in
// /proc/PID/stat. It is 100 on every mainstream architecture; reading it
// properly needs sysconf, which needs cgo.
const clockTicks = 100

// ProcessCPU returns the user+system CPU time the process pid has used,
// from procRoot/PID/stat (procRoot "" means /proc). The resolution is one
// tick (10 ms), so a phase should use at least a few seconds of CPU.
func ProcessCPU(procRoot string, pid int) (time.Duration, error) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, fmt.Errorf("idem: reading the server's CPU time: %w", err)
	}
	// The command name (field 2) is in parentheses and may contain spaces:
	// fields are counted from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("idem: %s/%d/stat is not a stat file", procRoot, pid)
	}
	f := bytes.Fields(b[i+1:])
	// After ')' come field 3 (state) onwards: utime is field 14, stime 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("idem: %s/%d/stat has %d fields after the name, want at least 13", procRoot, pid, len(f))
	}
	ut, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("idem: %s/%d/stat has no utime/stime numbers", procRoot, pid)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}
