package idemd

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/idemhq/idem/server"
)

func parse(t *testing.T, args []string, env map[string]string) (Config, error) {
	t.Helper()
	fs := flag.NewFlagSet("idemd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c := DefaultConfig()
	RegisterFlags(fs, &c)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	err := ApplyEnv(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	return c, err
}

func TestEnvNames(t *testing.T) {
	for flagName, want := range map[string]string{"listen": "IDEM_LISTEN", "metrics-listen": "IDEM_METRICS_LISTEN", "max-result-bytes": "IDEM_MAX_RESULT_BYTES"} {
		if got := EnvName(flagName); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", flagName, got, want)
		}
	}
}

func TestFlagsAndEnv(t *testing.T) {
	c, err := parse(t, []string{"--listen", ":7000", "--max-lease", "10m"}, map[string]string{
		"IDEM_LISTEN":            ":9999",
		"IDEM_STORE":             "memory://",
		"IDEM_DEFAULT_RETENTION": "2h",
		"IDEM_LOG_LEVEL":         "debug",
		"IDEM_NAMESPACE_POLICY":  "a=max-lease=1m;b=store-results=false,max-result-bytes=10",
	})
	if err != nil {
		t.Fatalf("parse error = %v", err)
	}
	if c.Listen != ":7000" {
		t.Errorf("Listen = %q, want the flag's :7000 over the env", c.Listen)
	}
	if c.Store != "memory://" || c.DefaultRetention != 2*time.Hour || c.MaxLease != 10*time.Minute || c.LogLevel.String() != "DEBUG" {
		t.Errorf("config = %+v, want store, retention and log level from env, max lease from flag", c)
	}
	want := Policies{
		"a": {MaxLease: time.Minute, StoreResults: true},
		"b": {MaxResultSize: 10, StoreResults: false},
	}
	if c.Policies.String() != want.String() {
		t.Errorf("Policies = %v, want %v", c.Policies, want)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate() = %v", err)
	}
}

func TestDefaultConfigMatchesServerLimits(t *testing.T) {
	l, err := DefaultConfig().Limits()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := server.DefaultLimits().WithDefaults()
	if l != want {
		t.Errorf("Limits() = %+v, want %+v", l, want)
	}
}

func TestBadValues(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"env duration", nil, map[string]string{"IDEM_MAX_LEASE": "x"}, "IDEM_MAX_LEASE"},
		{"env int", nil, map[string]string{"IDEM_MAX_RESULT_BYTES": "lots"}, "IDEM_MAX_RESULT_BYTES"},
		{"policy without namespace", []string{"--namespace-policy", "=max-lease=1s"}, nil, "NAMESPACE"},
		{"policy unknown key", []string{"--namespace-policy", "ns=colour=blue"}, nil, "unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, tt.args, tt.env)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one naming %q", err, tt.want)
			}
		})
	}
	c := DefaultConfig()
	c.MaxResultBytes = 0
	c.ShutdownTimeout = -1
	if err := c.Validate(); err == nil {
		t.Error("Validate() of zero max result bytes and negative timeout = nil, want an error")
	}
}

// A --namespace-policy value above the server's limit is refused, as the
// same value in a policy file is, instead of being clamped quietly.
func TestNamespacePolicyCannotWiden(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string // "" for valid
	}{
		{[]string{"--namespace-policy", "pay=max-lease=1h"}, ""},
		{[]string{"--namespace-policy", "pay=max-lease=2h"}, "pay: max-lease=2h0m0s is above --max-lease (1h0m0s)"},
		{[]string{"--max-lease", "3h", "--namespace-policy", "pay=max-lease=2h"}, ""},
		{[]string{"--namespace-policy", "pay=default-retention=800h"}, "pay: default-retention=800h0m0s is above --max-retention"},
		{[]string{"--namespace-policy", "pay=max-result-bytes=2097152"}, "pay: max-result-bytes=2097152 is above --max-result-bytes (1048576)"},
	} {
		c, err := parse(t, tt.args, nil)
		if err != nil {
			t.Fatalf("%v: parse: %v", tt.args, err)
		}
		err = c.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%v: Validate() = %v, want nil", tt.args, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%v: Validate() = %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}
