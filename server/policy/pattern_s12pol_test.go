package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/idemhq/idem/server"
)

// TestPatternNoNamespaceCanMatch: idem refuses a namespace with a
// non-printable character or longer than --max-namespace-bytes, so a
// pattern holding one (a zero-width space pasted from a chat or a web page,
// a control character) or longer than that routes nothing: the namespaces
// it was written for would go to default without a word.
func TestPatternNoNamespaceCanMatch(t *testing.T) {
	long := strings.Repeat("n", server.DefaultLimits().MaxNamespaceBytes+1)
	tests := []struct {
		name, file, text, want string
	}{
		{"zero-width space in a prefix", "p.yaml", "namespaces:\n  default: {}\n  \"payments\u200b.*\":\n    max_lease: 1m\n", "p.yaml:3: pattern \"payments\\u200b.*\""},
		{"control character in an exact pattern", "p.yaml", "namespaces:\n  \"a\\x01b\": {}\n", "p.yaml:2: pattern \"a\\x01b\""},
		{"tab inside a pattern", "p.yaml", "namespaces:\n  \"a\\tb.*\": {}\n", "p.yaml:2: pattern \"a\\tb.*\""},
		{"no-break space inside a pattern", "p.yaml", "namespaces:\n  \"pay\u00a0ments\": {}\n", "p.yaml:2: pattern \"pay\\u00a0ments\""},
		{"exact pattern too long", "p.yaml", "namespaces:\n  " + long + ": {}\n", "p.yaml:2: pattern"},
		{"prefix too long", "p.yaml", "namespaces:\n  " + long + ".*: {}\n", "p.yaml:2: pattern"},
		{"TOML tab in a literal key", "p.toml", "[namespaces.'a\tb']\n", "p.toml:1: pattern \"a\\tb\""},
		{"TOML zero-width space", "p.toml", "[namespaces.\"payments\\u200B.*\"]\nmax_lease = \"1m\"\n", "p.toml:1: pattern \"payments\\u200b.*\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse(tt.file, []byte(tt.text), server.DefaultLimits())
			if err == nil {
				t.Fatalf("Parse() accepted %d rule(s) %+v, want an error %q", len(f.Rules), f.Rules, tt.want)
			}
			var fe *FileError
			if !errors.As(err, &fe) {
				t.Errorf("Parse() error %T, want *FileError", err)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "no namespace") {
				t.Errorf("Parse() error = %q, want it to contain %q and say no namespace can match", err, tt.want)
			}
		})
	}
}

// TestPatternOddButValid: what a namespace may hold stays accepted.
func TestPatternOddButValid(t *testing.T) {
	exact := strings.Repeat("n", server.DefaultLimits().MaxNamespaceBytes)
	text := "namespaces:\n  \"pay ments\": {}\n  \".*\": {}\n  \"zahlungen.ü.*\": {}\n  " + exact + ": {}\n  \" padded.* \": {}\n"
	f, err := Parse("p.yaml", []byte(text), server.DefaultLimits())
	if err != nil {
		t.Fatalf("Parse() error = %v", err)
	}
	if len(f.Rules) != 5 {
		t.Fatalf("Parse() = %d rules, want 5", len(f.Rules))
	}
}
