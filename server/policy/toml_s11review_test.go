package policy

import (
	"strings"
	"testing"

	"github.com/idemhq/idem/server"
)

// TestParseTOMLLeadingBOM: a policy file saved by an editor that starts
// UTF-8 files with a byte order mark (Windows Notepad) is read as TOML,
// as the same file is read as YAML, and its lines are still counted from
// the top. Refused, it read "invalid character at start of key: U+00EF".
func TestParseTOMLLeadingBOM(t *testing.T) {
	const body = "[namespaces.\"a\"]\nmax_result_bytes = 10\n"
	f, err := Parse("p.toml", []byte("\ufeff"+body), server.DefaultLimits())
	if err != nil {
		t.Fatalf("Parse(TOML with a BOM) = %v, want the file read", err)
	}
	if len(f.Rules) != 1 || f.Rules[0].Pattern != "a" || f.Rules[0].Policy.MaxResultSize != 10 {
		t.Fatalf("Parse(TOML with a BOM) rules = %+v, want pattern a with max_result_bytes 10", f.Rules)
	}
	_, err = Parse("p.toml", []byte("\ufeff"+body+"max_lease = 5\n"), server.DefaultLimits())
	if err == nil || !strings.Contains(err.Error(), "p.toml:3:") {
		t.Fatalf("Parse(TOML with a BOM, bad line 3) = %v, want line 3 named", err)
	}
}
