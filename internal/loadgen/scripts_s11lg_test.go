package loadgen

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/idemhq/idem/internal/testenv"
)

// bench/lib.sh's summary shows a round's errors, and says which round its
// phase lines are: the median by throughput ratio, whose CPU figures need
// not give the median CPU ratio.
func TestScriptsSummaryShowsRoundErrors(t *testing.T) {
	for _, tool := range []string{"bash", "python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			if testenv.InCI() {
				t.Fatalf("no %s, and CI is set", tool)
			}
			t.Skipf("no %s", tool)
		}
	}
	phase := func(name string) string {
		return `{"name": "` + name + `", "ops_per_sec": 10, "errors": 0, "latency_us": {"p50": 1000, "p99": 2000}}`
	}
	report := `{"floor": ` + phase("floor") + `, "idem": ` + phase("idem") + `, "ratios": {"throughput": 1, "p50_latency": 1},
	  "rounds": [{"floor_ops_per_sec": 10, "idem_ops_per_sec": 0, "floor_errors": 0, "idem_errors": 7, "ratios": {"throughput": 0, "p50_latency": 1}},
	             {"floor_ops_per_sec": 10, "idem_ops_per_sec": 10, "floor_errors": 0, "idem_errors": 0, "ratios": {"throughput": 1, "p50_latency": 1}}]}`
	f := filepath.Join(t.TempDir(), "r.json")
	if err := os.WriteFile(f, []byte(report), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "-c", `source "$1/lib.sh" && summary "$2"`, "_", benchDir, f)
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("summary: %v: %s", err, out)
	}
	lines := strings.Split(string(out), "\n")
	if !strings.Contains(lines[0], "round 1") || !strings.Contains(lines[0], "idem 7") {
		t.Errorf("summary's round 1 line = %q, want its 7 idem errors", lines[0])
	}
	if strings.Contains(lines[1], "errors") {
		t.Errorf("summary's clean round 2 line = %q, want no errors shown", lines[1])
	}
	if !strings.Contains(string(out), "median round by throughput ratio") {
		t.Errorf("summary does not say how its median round is chosen:\n%s", out)
	}
}
