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

// A limit flag that is out of range is named in the error, so the one
// line idemd prints says which flag to fix.
func TestLimitErrorsNameTheFlag(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"--max-result-bytes", "0"}, []string{"--max-result-bytes 0 must be positive"}},
		{[]string{"--default-lease=-1s"}, []string{"--default-lease -1s must be positive"}},
		{[]string{"--default-retention", "0s", "--max-lease", "0s"}, []string{"--max-lease 0s must be positive", "--default-retention 0s must be positive"}},
		{[]string{"--default-lease", "2h"}, []string{"--default-lease 2h0m0s is above --max-lease 1h0m0s"}},
		{[]string{"--max-lease", "500ms"}, []string{"--max-lease 500ms is below the shortest lease, 1s"}},
		{[]string{"--default-lease", "500ms"}, []string{"--default-lease 500ms is below the shortest lease, 1s"}},
		{[]string{"--default-retention", "800h"}, []string{"--default-retention 800h0m0s is above --max-retention 720h0m0s"}},
		{[]string{"--max-retention", "1000000h"}, []string{"--max-retention 1000000h0m0s is beyond"}},
	} {
		c, err := parse(t, tt.args, nil)
		if err != nil {
			t.Fatalf("%v: parse: %v", tt.args, err)
		}
		err = c.Validate()
		for _, want := range tt.want {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%v: Validate() = %v, want an error containing %q", tt.args, err, want)
			}
		}
	}
}

// A --namespace-policy that the server would serve differently from what
// it says is refused, as the same policy in a policy file is: a default
// above the policy's own maximum or a value below the server's minimum
// would be clamped quietly, and a namespace or key given twice would keep
// only its last value.
func TestNamespacePolicyMeansWhatItSays(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--namespace-policy", "pay=default-lease=10m,max-lease=1m"}, "pay: default-lease=10m0s is above its max-lease=1m0s"},
		{[]string{"--namespace-policy", "pay=default-retention=2h,max-retention=1h"}, "pay: default-retention=2h0m0s is above its max-retention=1h0m0s"},
		{[]string{"--namespace-policy", "pay=max-lease=100ms"}, "pay: max-lease=100ms is below the shortest lease, 1s"},
		{[]string{"--namespace-policy", "pay=default-retention=10ms"}, "pay: default-retention=10ms is below the shortest retention, 1s"},
	} {
		c, err := parse(t, tt.args, nil)
		if err != nil {
			t.Fatalf("%v: parse: %v", tt.args, err)
		}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: Validate() = %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--namespace-policy", "pay=max-lease=1m", "--namespace-policy", "pay=max-retention=1h"}, `namespace "pay" given twice`},
		{[]string{"--namespace-policy", "pay=max-lease=1m;pay=max-retention=1h"}, `namespace "pay" given twice`},
		{[]string{"--namespace-policy", "pay=max-lease=1m,max-lease=2m"}, `max-lease given twice`},
	} {
		if _, err := parse(t, tt.args, nil); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: parse error = %v, want one containing %q", tt.args, err, tt.want)
		}
	}
}
