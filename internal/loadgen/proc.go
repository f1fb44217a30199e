package loadgen

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
	"unsafe"
)

// atClkTck is AT_CLKTCK, the auxiliary vector entry holding USER_HZ (the
// unit of utime and stime), which is what sysconf(_SC_CLK_TCK) returns.
const atClkTck = 17

// userHZ reads USER_HZ from procRoot/self/auxv, without cgo; 100, its
// value on mainstream architectures, when that is not readable.
func userHZ(procRoot string) int64 {
	b, err := os.ReadFile(filepath.Join(procRoot, "self", "auxv"))
	if err != nil {
		return 100
	}
	// Pairs of native words: type, value; type 0 ends the vector.
	word := int(unsafe.Sizeof(uintptr(0)))
	for i := 0; i+2*word <= len(b); i += 2 * word {
		var k, v uint64
		if word == 8 {
			k, v = binary.NativeEndian.Uint64(b[i:]), binary.NativeEndian.Uint64(b[i+word:])
		} else {
			k, v = uint64(binary.NativeEndian.Uint32(b[i:])), uint64(binary.NativeEndian.Uint32(b[i+word:]))
		}
		if k == 0 {
			break
		}
		if k == atClkTck && v > 0 {
			return int64(v)
		}
	}
	return 100
}

// ProcessCPU returns the user+system CPU time the process pid has used,
// from procRoot/PID/stat (procRoot "" means /proc). The resolution is one
// tick (1/USER_HZ, 10 ms), so a phase should use at least a few seconds of CPU.
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
	// A zombie's stat stays readable with its CPU time frozen: measured,
	// it would pass for a server that used no CPU.
	if s := string(f[0]); s == "Z" || s == "X" || s == "x" {
		return 0, fmt.Errorf("idem: process %d has exited (state %s)", pid, s)
	}
	ut, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("idem: %s/%d/stat has no utime/stime numbers", procRoot, pid)
	}
	return time.Duration(ut+st) * time.Second / time.Duration(userHZ(procRoot)), nil
}
