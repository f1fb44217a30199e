package ctl

import (
	"encoding/json"
	"testing"

	"github.com/idemhq/idem/internal/loadgen"
)

// With several rounds the report's phases are the median round's; a run in
// which another round's calls failed must fail all the same, or its
// ratios and rates (which enter the medians) pass for clean measurements.
func TestBenchErrorsInAnyRound(t *testing.T) {
	clean := `"floor": {"name": "floor", "calls": 10, "ops": 10, "errors": 0}, "idem": {"name": "idem", "calls": 10, "ops": 10, "errors": 0}`
	for _, tc := range []struct {
		name, rounds string
		wantErr      bool
	}{
		{"clean", `[{"floor_ops_per_sec": 1, "idem_ops_per_sec": 1, "ratios": {}}, {"floor_ops_per_sec": 1, "idem_ops_per_sec": 1, "ratios": {}}]`, false},
		{"idem errors in another round", `[{"floor_ops_per_sec": 1, "idem_ops_per_sec": 0, "idem_errors": 10, "ratios": {}}, {"floor_ops_per_sec": 1, "idem_ops_per_sec": 1, "ratios": {}}]`, true},
		{"floor errors in another round", `[{"floor_ops_per_sec": 1, "idem_ops_per_sec": 1, "floor_errors": 3, "ratios": {}}, {"floor_ops_per_sec": 1, "idem_ops_per_sec": 1, "ratios": {}}]`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rep loadgen.Report
			if err := json.Unmarshal([]byte(`{`+clean+`, "rounds": `+tc.rounds+`}`), &rep); err != nil {
				t.Fatal(err)
			}
			if err := benchErrors(&rep); (err != nil) != tc.wantErr {
				t.Errorf("benchErrors() = %v, want an error: %v", err, tc.wantErr)
			}
		})
	}
}
