package policy

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/idemhq/idem/server"
	_ "github.com/idemhq/idem/storage/pebble"
	_ "github.com/idemhq/idem/storage/redis"
)

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // each must appear in the error
	}{
		{"unknown top-level key", "namespaces: {}\nstores: {}\n", []string{"p.yaml:2: unknown key \"stores\""}},
		{"unknown policy key", "namespaces:\n  a.b:\n    max_lease: 1m\n    retention: 1h\n", []string{"p.yaml:4: \"a.b\": unknown key \"retention\""}},
		{"identical patterns", "namespaces:\n  a.b:\n    max_lease: 1m\n  a.b:\n    max_lease: 2m\n", []string{"p.yaml:4: pattern \"a.b\" overlaps pattern \"a.b\" of line 2"}},
		{"same prefix after normalisation", "namespaces:\n  payments.*: {}\n  \"payments.**\": {}\n", []string{"p.yaml:3: pattern \"payments.**\" overlaps pattern \"payments.*\" of line 2"}},
		{"star is default", "namespaces:\n  default: {}\n  \"*\": {}\n", []string{"p.yaml:3: pattern \"*\" overlaps pattern \"default\" of line 2"}},
		{"star inside a pattern", "namespaces:\n  \"a.*.b\": {}\n", []string{"p.yaml:2: pattern \"a.*.b\": '*' may only end a pattern"}},
		{"bad duration", "namespaces:\n  a:\n    max_lease: 10 minutes\n", []string{"p.yaml:3: \"a\": max_lease is \"10 minutes\", not a duration"}},
		{"default above max", "namespaces:\n  a:\n    default_retention: 2h\n    max_retention: 1h\n", []string{"p.yaml:3: \"a\": default_retention 2h0m0s is above max_retention 1h0m0s"}},
		{"default above server max", "namespaces:\n  a:\n    max_lease: 1m\n  b:\n    default_lease: 2h\n", []string{"p.yaml:5: \"b\": default_lease 2h0m0s is above the server's --max-lease 1h0m0s"}},
		{"max above server max", "namespaces:\n  a:\n    max_retention: 31d\n", []string{"p.yaml:3: \"a\": max_retention 744h0m0s is above the server's --max-retention 720h0m0s"}},
		{"below server min", "namespaces:\n  a:\n    max_lease: 10ms\n", []string{"p.yaml:3: \"a\": max_lease 10ms is below the server's minimum 1s"}},
		{"result size above server max", "namespaces:\n  a:\n    max_result_bytes: 2000000\n", []string{"p.yaml:3: \"a\": max_result_bytes 2000000 is above the server's --max-result-bytes 1048576"}},
		{"bad bool", "namespaces:\n  a:\n    store_results: maybe\n", []string{"p.yaml:3: \"a\": store_results is \"maybe\""}},
		{"repeated key", "namespaces:\n  a:\n    max_lease: 1m\n    max_lease: 2m\n", []string{"p.yaml:4: \"a\": key max_lease repeats line 3"}},
		{"policy not a mapping", "namespaces:\n  a: 5\n", []string{"p.yaml:2: policy of \"a\" must be a mapping"}},
		{"invalid YAML", "namespaces:\n  a: {\n", []string{"p.yaml:", "not valid YAML"}},
		{"empty", "", []string{"p.yaml: is empty"}},
		{"no namespaces", "{}\n", []string{"p.yaml:1: has no \"namespaces\" mapping"}},
		// yaml.Unmarshal reads the first document alone: the patterns after
		// "---" would route to default without a word.
		{"second document", "namespaces:\n  a.*: {}\n---\nnamespaces:\n  b.*: {}\n", []string{"p.yaml:4: a second YAML document"}},
		{"every problem at once", "namespaces:\n  a:\n    max_lease: x\n  b:\n    bogus: 1\n", []string{"p.yaml:3:", "p.yaml:5:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("p.yaml", []byte(tt.yaml), server.DefaultLimits())
			if err == nil {
				t.Fatalf("Parse() = nil error, want %q", tt.want)
			}
			var fe *FileError
			if !errors.As(err, &fe) {
				t.Errorf("Parse() error %T, want *FileError", err)
			}
			if !strings.HasPrefix(err.Error(), "idem: policy file p.yaml") {
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

func TestParseValid(t *testing.T) {
	const text = `
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
	f, err := Parse("p.yaml", []byte(text), server.DefaultLimits())
	if err != nil {
		t.Fatalf("Parse() = %v", err)
	}
	want := []Rule{
		{Pattern: "/payments.v1.Payments/Charge", Kind: Exact, Match: "/payments.v1.Payments/Charge", Store: "memory://", Line: 3,
			Policy: server.Policy{DefaultLease: 10 * time.Second, MaxLease: 2 * time.Minute, DefaultRetention: 7 * 24 * time.Hour, MaxRetention: 7 * 24 * time.Hour, MaxResultSize: 4096}},
		{Pattern: "payments.*", Kind: Prefix, Match: "payments.", Line: 11, Policy: server.Policy{StoreResults: true}},
		{Pattern: "default", Kind: Default, Line: 12, Policy: server.Policy{StoreResults: true}},
	}
	if len(f.Rules) != len(want) {
		t.Fatalf("Parse() rules = %+v, want %+v", f.Rules, want)
	}
	for i := range want {
		if f.Rules[i] != want[i] {
			t.Errorf("rule %d = %+v, want %+v", i, f.Rules[i], want[i])
		}
	}
}

func TestResolvePrecedence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.yaml")
	// max_lease tells the rules apart.
	writePolicy(t, path, `
namespaces:
  payments.refunds: {max_lease: 1m}
  payments.*: {max_lease: 2m}
  payments.refunds.*: {max_lease: 3m}
  p*: {max_lease: 4m}
  default: {max_lease: 5m}
`)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	r, err := Load(ctx, Options{Path: path})
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	defer r.Close(ctx)
	tests := []struct {
		ns   string
		want time.Duration
	}{
		{"payments.refunds", time.Minute},        // exact beats prefixes
		{"payments.refunds.eu", 3 * time.Minute}, // longest prefix
		{"payments.charge", 2 * time.Minute},     // shorter prefix
		{"payments", 4 * time.Minute},            // "payments." does not match
		{"other", 5 * time.Minute},               // default
		{"", 5 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.ns, func(t *testing.T) {
			st, pol := r.Resolve("t", tt.ns)
			if pol.MaxLease != tt.want {
				t.Errorf("Resolve(%q) max lease = %v, want %v", tt.ns, pol.MaxLease, tt.want)
			}
			if st != nil {
				t.Errorf("Resolve(%q) store = %v, want nil (the server's own)", tt.ns, st)
			}
		})
	}
}

func TestLoadStoreErrors(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	writePolicy(t, notDir, "x")
	tests := []struct {
		name  string
		yaml  string
		want  []string
		never string
	}{
		{"unreachable redis", "namespaces:\n  default: {}\n  notify.*:\n    store: redis://:hunter2@127.0.0.1:1/0?dial_timeout=200ms\n",
			[]string{"p.yaml:3: \"notify.*\":", "redis://:xxxxx@127.0.0.1:1/0"}, "hunter2"},
		{"unknown scheme", "namespaces:\n  a:\n    store: nosuch://x\n", []string{"p.yaml:2: \"a\": cannot open store nosuch://x", "not supported"}, ""},
		{"pebble on a file", "namespaces:\n  a:\n    store: " + pebbleURL(notDir) + "\n", []string{"p.yaml:2: \"a\": cannot open store"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
			defer cancel()
			path := filepath.Join(t.TempDir(), "p.yaml")
			writePolicy(t, path, tt.yaml)
			r, err := Load(ctx, Options{Path: path, PingTimeout: 2 * time.Second})
			if err == nil {
				r.Close(ctx)
				t.Fatalf("Load() = nil error, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Load() error = %q, want it to contain %q", err, w)
				}
			}
			if tt.never != "" && strings.Contains(err.Error(), tt.never) {
				t.Errorf("Load() error = %q shows the password", err)
			}
		})
	}
}

// TestDaysOutOfRange: a day count whose duration would not fit wraps
// around unless checked, and would then be accepted as a small value.
func TestDaysOutOfRange(t *testing.T) {
	lim, _ := server.Limits{}.WithDefaults()
	for _, v := range []string{"73025633904072d", "-1d"} {
		if f, err := Parse("p.yaml", []byte("namespaces:\n  a.*:\n    max_retention: "+v+"\n"), lim); err == nil {
			t.Errorf("Parse accepted max_retention %s as %v, want an error", v, f.Rules[0].Policy.MaxRetention)
		}
	}
}
