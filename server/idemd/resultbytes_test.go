package idemd

import (
	"strings"
	"testing"
)

// A --max-result-bytes no request can carry was accepted and logged as the
// limit, while gRPC refused results over 4 MiB (2×N+64KiB wrapped around)
// with RESOURCE_EXHAUSTED, a code clients retry.
func TestMaxResultBytesBounded(t *testing.T) {
	for _, tc := range []struct {
		n       int
		wantErr bool
	}{
		{1 << 20, false},
		{1 << 30, false},
		{1<<30 + 1, true},
		{1 << 62, true},
	} {
		c := DefaultConfig()
		c.MaxResultBytes = tc.n
		err := c.Validate()
		if (err != nil) != tc.wantErr {
			t.Errorf("Validate() with --max-result-bytes %d = %v, want error %v", tc.n, err, tc.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), "--max-result-bytes") {
			t.Errorf("Validate() = %q, want it to name --max-result-bytes", err)
		}
	}
}
