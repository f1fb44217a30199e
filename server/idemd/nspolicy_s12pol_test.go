package idemd

import (
	"strings"
	"testing"
)

// --namespace-policy names exact namespaces. A pattern there ("payments.*",
// as a policy file takes) matched only a namespace spelled with the '*',
// and a namespace idem refuses (a zero-width space, too long) none at all:
// both were accepted, and the namespaces meant kept the server's limits
// without a word.
func TestNamespacePolicyNamesANamespace(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--namespace-policy", "payments.*=max-retention=1h"}, "payments.*"},
		{[]string{"--namespace-policy", "*=max-retention=1h"}, "--policy"},
		{[]string{"--namespace-policy", "pay\u200b=max-retention=1h"}, "U+200B"},
		{[]string{"--namespace-policy", "pay\tx=max-retention=1h"}, "U+0009"},
		{[]string{"--namespace-policy", strings.Repeat("n", 257) + "=max-retention=1h"}, "257 bytes"},
	} {
		c, err := parse(t, tt.args, nil)
		if err == nil {
			err = c.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%.60q: error = %v, want one containing %q", tt.args, err, tt.want)
		}
	}
}

// Spaces around the namespace are dropped, as around a policy file's
// pattern: "pay =…" narrows "pay", not a namespace "pay " no one uses.
func TestNamespacePolicyTrimsTheNamespace(t *testing.T) {
	c, err := parse(t, []string{"--namespace-policy", "a.b=max-lease=1m; pay =max-lease=1m"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Policies["pay"]; !ok {
		t.Errorf("Policies = %v, want one for %q", c.Policies, "pay")
	}
	if _, ok := c.Policies["a.b"]; !ok || len(c.Policies) != 2 {
		t.Errorf("Policies = %v, want a.b and pay", c.Policies)
	}
	// The same namespace written twice, once with spaces, is still twice.
	if _, err := parse(t, []string{"--namespace-policy", "pay=max-lease=1m;pay =max-retention=1h"}, nil); err == nil || !strings.Contains(err.Error(), "given twice") {
		t.Errorf("parse error = %v, want the namespace given twice", err)
	}
}
