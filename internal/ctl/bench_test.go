package ctl

import (
	"encoding/json"
	"image"
	"image/color"
	"image/png"
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

	// The same run charted as PNG: the chart's size, and its series drawn.
	pngPath := filepath.Join(t.TempDir(), "bench.PNG")
	mustRun(ctx, t, addr, "bench", "-o", "json", "--count", "40", "--concurrency", "4",
		"--mix", "completed=100", "--keyspace", "10", "--floor", "--plot", pngPath)
	f, err := os.Open(pngPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("--plot %s did not write a PNG: %v", pngPath, err)
	}
	if got, want := img.Bounds(), image.Rect(0, 0, 900, 710); got != want {
		t.Fatalf("PNG bounds = %v, want %v", got, want)
	}
	counts := map[color.RGBA]int{}
	for y := range 710 {
		for x := range 900 {
			counts[color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)]++
		}
	}
	for _, c := range []struct {
		name string
		rgba color.RGBA
	}{
		{"p50 blue", color.RGBA{0x1f, 0x77, 0xb4, 0xff}},
		{"p90 green", color.RGBA{0x2c, 0xa0, 0x2c, 0xff}},
		{"p99 red", color.RGBA{0xd6, 0x27, 0x28, 0xff}},
		{"idem ops/s purple", color.RGBA{0x94, 0x67, 0xbd, 0xff}},
		{"floor ops/s grey", color.RGBA{0x7f, 0x7f, 0x7f, 0xff}},
		{"text black", color.RGBA{0, 0, 0, 0xff}},
	} {
		if counts[c.rgba] < 20 {
			t.Errorf("PNG has %d pixels of %s %v, want at least 20", counts[c.rgba], c.name, c.rgba)
		}
	}

	table := mustRun(ctx, t, addr, "bench", "--count", "10", "--concurrency", "2", "--op", "reserve", "--batch", "5")
	for _, want := range []string{"op reserve", "batch 5", "outcomes: RESERVED=50", "errors:   none"} {
		if !strings.Contains(table, want) {
			t.Errorf("bench summary lacks %q:\n%s", want, table)
		}
	}
}
