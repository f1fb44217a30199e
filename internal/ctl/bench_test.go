package ctl

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBenchJSONAndPlot(t *testing.T) {
	ctx := testContext(t)
	addr := startServer(t)
	plot := filepath.Join(t.TempDir(), "bench.svg")
	out := mustRun(ctx, t, addr, "bench", "-o", "json", "--count", "40", "--concurrency", "4", "--conns", "2",
		"--mix", "completed=100", "--keyspace", "10", "--floor", "--plot", plot, "--server-pid", "0")
	var rep struct {
		Config struct {
			Conns int `json:"conns"`
		} `json:"config"`
		Floor struct {
			Calls int64 `json:"calls"`
		} `json:"floor"`
		Idem struct {
			Calls    int64            `json:"calls"`
			Errors   int64            `json:"errors"`
			Outcomes map[string]int64 `json:"outcomes"`
		} `json:"idem"`
		Ratios *struct {
			Throughput float64 `json:"throughput"`
		} `json:"ratios"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("bench -o json is not JSON: %v\n%s", err, out)
	}
	if rep.Config.Conns != 2 || rep.Floor.Calls != 40 || rep.Idem.Calls != 40 || rep.Idem.Errors != 0 || rep.Idem.Outcomes["COMPLETED"] != 40 || rep.Ratios == nil {
		t.Fatalf("bench report = %+v, want 2 conns, 40 floor and 40 idem calls all COMPLETED, ratios", rep)
	}
	svg, err := os.ReadFile(plot)
	if err != nil || !strings.HasPrefix(string(svg), "<svg") {
		t.Fatalf("--plot wrote %q (%v), want an SVG", svg[:min(len(svg), 40)], err)
	}

	table := mustRun(ctx, t, addr, "bench", "--count", "10", "--concurrency", "2", "--op", "reserve", "--batch", "5")
	for _, want := range []string{"op reserve", "batch 5", "outcomes: RESERVED=50", "errors:   none"} {
		if !strings.Contains(table, want) {
			t.Errorf("bench summary lacks %q:\n%s", want, table)
		}
	}
}
