package policy

import (
	"strings"
	"testing"

	"github.com/idemhq/idem/server"
)

// An anchor's value reused under another pattern was reported at the
// anchor's line, and a merge key ("<<: *base") as "<< must be a single
// value" at the line of the anchor it names: the operator was sent to a
// line that is right for another pattern, not to the line to fix.
func TestAliasAndMergeKeyLines(t *testing.T) {
	tests := []struct {
		name, text  string
		want, never []string
	}{
		{"merge key in a policy",
			"namespaces:\n  a.*: &base\n    max_lease: 1m\n  b.*:\n    <<: *base\n    store_results: false\n",
			[]string{`p.yaml:5: "b.*": merge keys (<<) are not supported`}, []string{"p.yaml:2:"}},
		{"merge key in namespaces",
			"namespaces:\n  a.*: {}\n  <<: {b.*: {}}\n",
			[]string{`p.yaml:3: merge keys (<<) are not supported`}, nil},
		{"alias to a bad duration",
			"namespaces:\n  a.*:\n    max_lease: &l 10 minutes\n  b.*:\n    max_lease: *l\n",
			[]string{`p.yaml:3: "a.*": max_lease is "10 minutes"`, `p.yaml:5: "b.*": max_lease is "10 minutes"`}, nil},
		{"alias to a policy that is not a mapping",
			"namespaces:\n  a.*:\n    store: &s redis://r:6379/0\n  b.*: *s\n",
			[]string{`p.yaml:4: policy of "b.*" must be a mapping`}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("p.yaml", []byte(tt.text), server.DefaultLimits())
			if err == nil {
				t.Fatal("Parse() = nil error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse() error = %q, want it to contain %q", err, w)
				}
			}
			for _, n := range tt.never {
				if strings.Contains(err.Error(), n) {
					t.Errorf("Parse() error = %q, want no %q", err, n)
				}
			}
		})
	}
}
