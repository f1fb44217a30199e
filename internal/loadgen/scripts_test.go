package loadgen

import (
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/idemhq/idem/internal/testenv"
)

const benchDir = "../../bench"

// The scripts' rate of a store is the median of its rounds' idem rates,
// not the median round's rate (that round is the median by ratio) nor the
// upper middle of an even count.
func TestScriptsMedianIdemRate(t *testing.T) {
	for _, tool := range []string{"bash", "python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			// .ci/run installs both: CI must not pass by skipping this.
			if testenv.InCI() {
				t.Fatalf("no %s, and CI is set", tool)
			}
			t.Skipf("no %s", tool)
		}
	}
	for _, tc := range []struct {
		name, report, want string
	}{
		{"odd", `{"idem": {"ops_per_sec": 30}, "rounds": [{"idem_ops_per_sec": 30}, {"idem_ops_per_sec": 10}, {"idem_ops_per_sec": 20}]}`, "20"},
		{"even", `{"idem": {"ops_per_sec": 2}, "rounds": [{"idem_ops_per_sec": 1}, {"idem_ops_per_sec": 4}, {"idem_ops_per_sec": 2}, {"idem_ops_per_sec": 3}]}`, "2.5"},
		{"one round", `{"idem": {"ops_per_sec": 7.5}}`, "7.5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "r.json")
			if err := os.WriteFile(f, []byte(tc.report), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("bash", "-c", `source "$1/lib.sh" && median_idem_rate "$2"`, "_", benchDir, f)
			cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("median_idem_rate: %v: %s", err, out)
			}
			got, _ := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
			want, _ := strconv.ParseFloat(tc.want, 64)
			if got != want {
				t.Errorf("median_idem_rate = %q, want %s", out, tc.want)
			}
		})
	}
	for _, s := range []string{"floor.sh", "redis.sh"} {
		b, err := os.ReadFile(filepath.Join(benchDir, s))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "median_idem_rate") {
			t.Errorf("%s does not take the median of the rounds' rates", s)
		}
	}
}

// bench/pgbench.sh compares idem's pair with pgbench_pair.sql's: idem's
// Complete must store a body as large as the script's.
func TestPgbenchPayloadMatchesScript(t *testing.T) {
	sh, err := os.ReadFile(filepath.Join(benchDir, "pgbench.sh"))
	if err != nil {
		t.Fatal(err)
	}
	sql, err := os.ReadFile("../../storage/cockroach/testdata/pgbench_pair.sql")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`--payload (\d+)`).FindSubmatch(sh)
	if m == nil {
		t.Fatal("pgbench.sh runs idem without --payload")
	}
	payload, _ := strconv.Atoi(string(m[1]))
	r := regexp.MustCompile(`result = '\\x([0-9a-f]+)'`).FindSubmatch(sql)
	if r == nil {
		t.Fatal("no result blob in pgbench_pair.sql")
	}
	blob, err := hex.DecodeString(string(r[1]))
	if err != nil {
		t.Fatal(err)
	}
	// The blob is the body and a little framing and metadata.
	if payload > len(blob) || len(blob)-payload > 64 {
		t.Errorf("--payload %d against pgbench's %d-byte stored result", payload, len(blob))
	}
}

// The scripts end by naming where their results are; by default that was
// inside the temp dir their exit removes, so the line named nothing.
func TestScriptsKeepDefaultResults(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		if testenv.InCI() {
			t.Fatal("no bash, and CI is set")
		}
		t.Skip("no bash")
	}
	tmp := t.TempDir()
	cmd := exec.Command("bash", "-c", `unset BENCH_OUT; source "$1/lib.sh" && echo "$BENCH_OUT" > "$BENCH_OUT/report.json" && echo "$BENCH_OUT"`, "_", benchDir)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sourcing lib.sh: %v: %s", err, out)
	}
	dir := strings.TrimSpace(string(out))
	if _, err := os.Stat(filepath.Join(dir, "report.json")); err != nil {
		t.Fatalf("after the script's exit, its results in BENCH_OUT=%s: %v", dir, err)
	}
}
