package ctl

import (
	"strings"
	"testing"
)

// Flag values that loadgen would take, then run on differently from what
// they say (or crash on), are usage errors before anything is dialled.
func TestBenchRefusesUnservableFlags(t *testing.T) {
	ctx := testContext(t)
	down := closedAddr(t)
	for _, tc := range []struct {
		name       string
		args       []string
		wantStderr string
	}{
		// NaN and Inf ran the whole duration closed loop, then -o json
		// failed on the report.
		{"rate NaN", []string{"--rate", "NaN"}, "idemctl: --rate NaN: "},
		{"rate Inf", []string{"--rate", "+Inf"}, "idemctl: --rate +Inf: "},
		// A period under 1ns truncates to 0: closed loop, reported as open.
		{"rate beyond a call per ns", []string{"--rate", "2e9"}, "idemctl: --rate 2e+09: "},
		// Allocated up front: out of memory and a runtime crash.
		{"payload beyond a gRPC message", []string{"--payload", "99999999999"}, "idemctl: --payload 99999999999: "},
		{"batch of payloads beyond a gRPC message", []string{"--op", "reserve-complete", "--batch", "1000", "--payload", "3000000"}, "idemctl: --payload 3000000: "},
		// 0 ran as 1, silently.
		{"batch 0", []string{"--batch", "0"}, "idemctl: --batch 0: must be 1–1000"},
		{"batch negative", []string{"--batch", "-3"}, "idemctl: --batch -3: must be 1–1000"},
		{"batch over the limit", []string{"--batch", "1001"}, "idemctl: --batch 1001: must be 1–1000"},
		{"rounds 0", []string{"--floor", "--rounds", "0"}, "idemctl: --rounds 0: must be 1–100"},
		{"rounds over the limit", []string{"--floor", "--rounds", "101"}, "idemctl: --rounds 101: must be 1–100"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--addr", down, "bench", "--count", "1"}, tc.args...)
			r := run(ctx, t, nil, args...)
			if r.code != ExitUsage || !strings.HasPrefix(r.stderr, tc.wantStderr) {
				t.Fatalf("idemctl %s: exit %d, stderr %q; want exit %d, stderr starting %q", strings.Join(args, " "), r.code, r.stderr, ExitUsage, tc.wantStderr)
			}
		})
	}
}
