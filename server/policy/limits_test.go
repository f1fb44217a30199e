package policy

import (
	"strings"
	"testing"

	"github.com/idemhq/idem/server"
)

// TestParseLimitBoundaries: a policy may narrow the server's limits up to
// and including them, and not one unit past either end.
func TestParseLimitBoundaries(t *testing.T) {
	tests := []struct {
		policy string
		bad    string // empty: accepted; else a part of the error
	}{
		{"max_lease: 1h", ""},
		{"max_lease: 1s", ""},
		{"max_lease: 1h0m0.000000001s", "above the server's --max-lease"},
		{"max_lease: 999ms", "below the server's minimum"},
		{"default_lease: 1s", ""},
		{"default_lease: 999999999ns", "below the server's minimum"},
		{"max_retention: 30d", ""},
		{"max_retention: 720h0m0.000000001s", "above the server's --max-retention"},
		{"default_retention: 1s", ""},
		{"default_retention: 0s", "below the server's minimum"},
		{"max_retention: -1h", "below the server's minimum"},
		{"max_result_bytes: 1048576", ""},
		{"max_result_bytes: 1", ""},
		{"max_result_bytes: 1048577", "above the server's --max-result-bytes"},
		{"max_result_bytes: 0", "want a positive number"},
		{"max_result_bytes: -1", "want a positive number"},
		{"max_result_bytes: 1e3", "want a positive number"},
	}
	for _, tt := range tests {
		t.Run(tt.policy, func(t *testing.T) {
			_, err := Parse("p.yaml", []byte("namespaces:\n  a:\n    "+tt.policy+"\n"), server.DefaultLimits())
			switch {
			case tt.bad == "" && err != nil:
				t.Errorf("Parse() error = %v, want the value accepted at the limit", err)
			case tt.bad != "" && (err == nil || !strings.Contains(err.Error(), "p.yaml:3:") || !strings.Contains(err.Error(), tt.bad)):
				t.Errorf("Parse() error = %v, want one at p.yaml:3 saying %q", err, tt.bad)
			}
		})
	}
}
