package policy

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/server/idemd"
)

// The YAML file of TestParseValid.
const validYAML = `
namespaces:
  /payments.v1.Payments/Charge:
    store: memory://
    default_lease: 10s
    max_lease: 2m
    default_retention: 7d
    max_retention: 7d
    store_results: false
    max_result_bytes: 4096
  payments.*: {}
  default:
`

// TestParseTOMLSameAsYAML: each way TOML has of writing validYAML gives
// its rules, at the TOML file's lines.
func TestParseTOMLSameAsYAML(t *testing.T) {
	yf, err := Parse("p.yaml", []byte(validYAML), server.DefaultLimits())
	if err != nil {
		t.Fatalf("Parse(YAML) = %v", err)
	}
	tests := []struct {
		name      string
		toml      string
		wantLines []int
	}{
		{"tables", `# tables
[namespaces."/payments.v1.Payments/Charge"]
store = "memory://"
default_lease = "10s"
max_lease = "2m"
default_retention = "7d"
max_retention = "7d"
store_results = false
max_result_bytes = 4_096

[namespaces."payments.*"]

[namespaces.default]
`, []int{2, 11, 13}},
		{"inline tables", `[namespaces]
"/payments.v1.Payments/Charge" = { store = 'memory://', default_lease = "10s", max_lease = "2m", default_retention = "7d", max_retention = "7d", store_results = false, max_result_bytes = 0x1000 }
"payments.*" = {}
default = {}
`, []int{2, 3, 4}},
		{"dotted keys", `namespaces."/payments.v1.Payments/Charge".store = "memory://"
namespaces."/payments.v1.Payments/Charge".default_lease = "10s"
namespaces."/payments.v1.Payments/Charge".max_lease = "2m"
namespaces."/payments.v1.Payments/Charge".default_retention = "7d"
namespaces."/payments.v1.Payments/Charge".max_retention = "7d"
namespaces."/payments.v1.Payments/Charge".store_results = false
namespaces."/payments.v1.Payments/Charge".max_result_bytes = 4096
namespaces."payments.*" = {}
namespaces.default = {}
`, []int{1, 8, 9}},
		{"one inline table", `namespaces = { "/payments.v1.Payments/Charge" = { store = "memory://", default_lease = "10s", max_lease = "2m", default_retention = "7d", max_retention = "7d", store_results = false, max_result_bytes = 4096 }, "payments.*" = {}, default = {} }
`, []int{1, 1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tf, err := Parse("p.toml", []byte(tt.toml), server.DefaultLimits())
			if err != nil {
				t.Fatalf("Parse(TOML) = %v", err)
			}
			if len(tf.Rules) != len(yf.Rules) {
				t.Fatalf("Parse(TOML) rules = %+v, want %+v", tf.Rules, yf.Rules)
			}
			for i, got := range tf.Rules {
				if got.Line != tt.wantLines[i] {
					t.Errorf("rule %d line = %d, want %d", i, got.Line, tt.wantLines[i])
				}
				want := yf.Rules[i]
				got.Line, want.Line = 0, 0
				if got != want {
					t.Errorf("rule %d = %+v, want %+v (as from YAML)", i, got, want)
				}
			}
		})
	}
}

func TestParseTOMLErrors(t *testing.T) {
	tests := []struct {
		name string
		toml string
		want []string // each must appear in the error
	}{
		{"syntax error", "[namespaces.a]\nstore = \n", []string{"p.toml:2: not valid TOML: "}},
		{"unclosed header", "\n\n[namespaces.a\n", []string{"p.toml:3: not valid TOML: expected ']'"}},
		{"leading zero", "[namespaces.a]\nmax_result_bytes = 0755\n", []string{"p.toml:2: not valid TOML: "}},
		{"repeated table", "[namespaces.a]\nmax_lease = \"1m\"\n[namespaces.a]\n", []string{"p.toml:3: table [namespaces.a] repeats line 1"}},
		{"repeated table, quoted", "[namespaces.a]\n[namespaces.\"a\"]\n", []string{"p.toml:2: table [namespaces.a] repeats line 1"}},
		{"repeated parent table", "[namespaces]\n[namespaces.a]\n[namespaces]\n", []string{"p.toml:3: table [namespaces] repeats line 1"}},
		{"repeated key", "[namespaces.a]\nmax_lease = \"1m\"\nmax_lease = \"2m\"\n", []string{"p.toml:3: key namespaces.a.max_lease repeats line 2"}},
		{"repeated pattern key", "[namespaces]\n\"b.*\" = {}\n\"b.*\" = {}\n", []string{"p.toml:3: key namespaces.\"b.*\" repeats line 2"}},
		{"header over an inline table", "[namespaces]\na = {}\n[namespaces.a]\n", []string{"p.toml:3: table [namespaces.a] repeats line 2"}},
		{"dotted key into an inline table", "[namespaces]\na = {}\na.max_lease = \"1m\"\n", []string{"p.toml:3: key namespaces.a repeats line 2"}},
		{"dotted key into a header's table", "[namespaces.a]\nstore = \"memory://\"\n[namespaces]\na.max_lease = \"1m\"\n", []string{"p.toml:4: key namespaces.a repeats line 1"}},
		{"header over dotted keys", "namespaces.a.max_lease = \"1m\"\n[namespaces]\n", []string{"p.toml:2: table [namespaces] repeats line 1"}},
		{"array", "[namespaces.a]\nstore = [\"memory://\"]\n", []string{"p.toml:2: \"a\": store must be a single value"}},
		{"inline table as a value", "[namespaces.a]\nstore = { url = \"memory://\" }\n", []string{"p.toml:2: \"a\": store must be a single value"}},
		{"unquoted dotted pattern", "[namespaces.payments.v1]\nmax_lease = \"1m\"\n", []string{"p.toml:1: namespaces.payments.v1 is a table under pattern \"payments\"; a pattern with dots takes quotes: [namespaces.\"payments.v1\"]"}},
		{"dotted key under a pattern", "[namespaces.a]\nstore.url = \"memory://\"\n", []string{"p.toml:2: namespaces.a.store is a table under pattern \"a\""}},
		{"array of tables", "[[namespaces]]\n", []string{"p.toml:1: [[namespaces]]: a policy file has no arrays of tables"}},
		{"policy not a table", "[namespaces]\na = 5\n", []string{"p.toml:2: policy of \"a\" must be a mapping"}},
		{"unknown top-level key", "title = \"x\"\n[namespaces.a]\n", []string{"p.toml:1: unknown key \"title\""}},
		{"unknown policy key", "[namespaces.\"a.b\"]\nmax_lease = \"1m\"\nretention = \"1h\"\n", []string{"p.toml:3: \"a.b\": unknown key \"retention\""}},
		{"datetime", "[namespaces.a]\nmax_retention = 1979-05-27\n", []string{"p.toml:2: \"a\": max_retention is \"1979-05-27\", not a duration"}},
		{"unquoted duration", "[namespaces.a]\nmax_lease = 90\n", []string{"p.toml:2: \"a\": max_lease is \"90\", not a duration"}},
		{"float size", "[namespaces.a]\nmax_result_bytes = 1.5\n", []string{"p.toml:2: \"a\": max_result_bytes is \"1.5\", want a positive number of bytes"}},
		{"size above server max", "[namespaces.a]\nmax_result_bytes = 2_000_000\n", []string{"p.toml:2: \"a\": max_result_bytes 2000000 is above the server's --max-result-bytes 1048576"}},
		{"bad bool", "[namespaces.a]\nstore_results = \"maybe\"\n", []string{"p.toml:2: \"a\": store_results is \"maybe\""}},
		{"overlapping patterns", "[namespaces.\"payments.*\"]\n[namespaces.\"payments.**\"]\n", []string{"p.toml:2: pattern \"payments.**\" overlaps pattern \"payments.*\" of line 1"}},
		{"empty", "# nothing\n", []string{"p.toml: is empty"}},
		{"every problem at once", "[namespaces.a]\nmax_lease = \"x\"\nmax_lease = \"1m\"\n[namespaces.b]\nbogus = 1\n", []string{"p.toml:2:", "p.toml:3:", "p.toml:5:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("p.toml", []byte(tt.toml), server.DefaultLimits())
			if err == nil {
				t.Fatalf("Parse() = nil error, want %q", tt.want)
			}
			if !strings.HasPrefix(err.Error(), "idem: policy file p.toml") {
				t.Errorf("Parse() error = %q, want it to start with the file", err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("Parse() error = %q, want one line", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse() error = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

// Only a name ending in .toml is read as TOML.
func TestParseSyntaxByName(t *testing.T) {
	const toml = "[namespaces.a]\nmax_lease = \"1m\"\n"
	const yml = "namespaces:\n  a:\n    max_lease: 1m\n"
	tests := []struct {
		path, text string
		ok         bool
	}{
		{"p.toml", toml, true},
		{"P.TOML", toml, true},
		{"p.toml", yml, false},
		{"p.yaml", yml, true},
		{"p.yml", yml, true},
		{"policy", yml, true},
		{"p.conf", toml, false},
	}
	for _, tt := range tests {
		_, err := Parse(tt.path, []byte(tt.text), server.DefaultLimits())
		if (err == nil) != tt.ok {
			t.Errorf("Parse(%q, %q) = %v, want ok %v", tt.path, tt.text, err, tt.ok)
		}
	}
}

// TestIdemdTOMLPolicy runs idemd with a TOML --policy and checks that a
// namespace gets its pattern's limits and another namespace the default's.
func TestIdemdTOMLPolicy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	path := filepath.Join(t.TempDir(), "p.toml")
	writePolicy(t, path, "[namespaces.\"a.*\"]\nmax_lease = \"1m\"\n\n[namespaces.default]\n")
	c, _, stop := servePolicy(ctx, t, path)
	reserve := func(ns string) error {
		_, err := c.Reserve(ctx, &idemv1.ReserveRequest{Namespace: ns, Key: "k", LeaseTtl: dur(90 * time.Second)})
		return err
	}
	if err := reserve("a.x"); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Reserve(a.x, lease 90s) under max_lease 1m = %v, want InvalidArgument", err)
	}
	if err := reserve("b"); err != nil {
		t.Errorf("Reserve(b, lease 90s) under default = %v, want success", err)
	}
	stop()
}

// A bad TOML policy stops idemd with one line naming the file and line.
func TestIdemdRefusesABadTOMLPolicy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	path := filepath.Join(t.TempDir(), "p.toml")
	writePolicy(t, path, "[namespaces.\"a.*\"]\nmax_lease = \"1m\"\nmax_lease = \"2m\"\n")
	var stderr bytes.Buffer
	noEnv := func(string) (string, bool) { return "", false }
	code := idemd.Main(ctx, []string{"--listen", "127.0.0.1:0", "--store", "memory://", "--policy", path}, noEnv, &stderr)
	if code != idemd.ExitUsage {
		t.Errorf("idemd exit code = %d, want %d", code, idemd.ExitUsage)
	}
	if want := "p.toml:3: key namespaces.\"a.*\".max_lease repeats line 2"; !strings.Contains(stderr.String(), want) || strings.Count(stderr.String(), "\n") != 1 {
		t.Errorf("stderr = %q, want one line containing %q", stderr.String(), want)
	}
}
