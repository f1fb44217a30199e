package loadgen

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

func TestParseMix(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Mix
		wantErr string
	}{
		{"new=80,completed=15,inflight=5", Mix{80, 15, 5}, ""},
		{"completed=100", Mix{0, 100, 0}, ""},
		{" new=50%, in-flight=50 ", Mix{50, 0, 50}, ""},
		{"new=80", Mix{}, "adds up to 80%"},
		{"new=80,completed=30", Mix{}, "adds up to 110%"},
		{"old=100", Mix{}, `mix kind "old" is unknown`},
		{"new", Mix{}, "is not KIND=PERCENT"},
		{"new=-5,completed=105", Mix{}, "needs a percentage"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseMix(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "idem: ") {
					t.Fatalf("ParseMix(%q) error = %v, want one containing %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseMix(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	_, conns := startServer(t, 1)
	for _, tc := range []struct {
		name    string
		change  func(*Config)
		wantErr string
	}{
		{"ok", func(*Config) {}, ""},
		{"no conns", func(c *Config) { c.Conns = nil }, "at least one connection"},
		{"bad op", func(c *Config) { c.Op = "lookup" }, `op "lookup" is unknown`},
		{"bad mix", func(c *Config) { c.Mix = Mix{New: 10} }, "does not add up to 100%"},
		{"batch too big", func(c *Config) { c.Batch = 1001 }, "batch 1001 is outside 0–1000"},
		{"no callers", func(c *Config) { c.Concurrency = 0 }, "concurrency 0"},
		{"no end", func(c *Config) { c.Count, c.Duration = 0, 0 }, "positive duration or count"},
		{"keyspace under batch", func(c *Config) { c.Mix = Mix{Completed: 100}; c.Batch = 20 }, "keyspace 10 must be at least 1 and at least the batch size 20"},
		{"keyspace unused", func(c *Config) { c.Keyspace = 0 }, ""},
		{"negative rate", func(c *Config) { c.Rate = -1 }, "rate -1 is negative"},
		{"no namespace", func(c *Config) { c.Namespace = "" }, "needs a namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := baseConfig(conns)
			tc.change(&c)
			err := c.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestKnownAnswers runs short loads whose every answer is known.
func TestKnownAnswers(t *testing.T) {
	for _, tc := range []struct {
		name         string
		change       func(*Config)
		wantCalls    int64
		wantOps      int64
		wantOutcomes map[string]int64
		// wantStored is the number of records by state in the namespace
		// afterwards, pools included.
		wantStored map[storage.State]int64
	}{
		{"completed duplicates", func(c *Config) { c.Mix = Mix{Completed: 100} }, 100, 100,
			map[string]int64{"COMPLETED": 100}, map[storage.State]int64{storage.StateCompleted: 10}},
		{"in-flight duplicates", func(c *Config) { c.Mix = Mix{InFlight: 100} }, 100, 100,
			map[string]int64{"IN_PROGRESS": 100}, map[storage.State]int64{storage.StateInProgress: 10}},
		{"new keys completed", func(c *Config) {}, 100, 100,
			map[string]int64{"RESERVED": 100}, map[storage.State]int64{storage.StateCompleted: 100}},
		{"new keys reserved only", func(c *Config) { c.Op = OpReserve }, 100, 100,
			map[string]int64{"RESERVED": 100}, map[storage.State]int64{storage.StateInProgress: 100}},
		{"batches", func(c *Config) { c.Batch = 10; c.Count = 7 }, 7, 70,
			map[string]int64{"RESERVED": 70}, map[storage.State]int64{storage.StateCompleted: 70}},
		{"batches of duplicates", func(c *Config) { c.Batch = 10; c.Count = 7; c.Mix = Mix{Completed: 100} }, 7, 70,
			map[string]int64{"COMPLETED": 70}, map[storage.State]int64{storage.StateCompleted: 10}},
		{"open loop", func(c *Config) { c.Rate = 2000; c.Count = 50; c.Mix = Mix{Completed: 100} }, 50, 50,
			map[string]int64{"COMPLETED": 50}, map[storage.State]int64{storage.StateCompleted: 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			store, conns := startServer(t, 2)
			cfg := baseConfig(conns)
			tc.change(&cfg)
			rep, err := Run(ctx, cfg)
			if err != nil {
				t.Fatalf("Run() = %v", err)
			}
			p := rep.Idem
			if p.Calls != tc.wantCalls || p.Ops != tc.wantOps || p.Errors != 0 {
				t.Fatalf("calls, ops, errors = %d, %d, %d (%v); want %d, %d, 0", p.Calls, p.Ops, p.Errors, p.ErrorsByCode, tc.wantCalls, tc.wantOps)
			}
			if !maps.Equal(p.Outcomes, tc.wantOutcomes) {
				t.Fatalf("outcomes = %v, want %v", p.Outcomes, tc.wantOutcomes)
			}
			if p.LatencyUS.P50 <= 0 || p.LatencyUS.P50 > p.LatencyUS.P99 || p.LatencyUS.P99 > p.LatencyUS.Max {
				t.Fatalf("latency = %+v, want 0 < p50 ≤ p99 ≤ max", p.LatencyUS)
			}
			rows, err := store.Stats(ctx, "default", "bench")
			if err != nil {
				t.Fatal(err)
			}
			got := map[storage.State]int64{}
			for _, r := range rows {
				got[r.State] += r.Count
			}
			if !maps.Equal(got, tc.wantStored) {
				t.Fatalf("stored records = %v, want %v", got, tc.wantStored)
			}
		})
	}
}

func TestOpenLoopKeepsSchedule(t *testing.T) {
	ctx := testContext(t)
	_, conns := startServer(t, 1)
	cfg := baseConfig(conns)
	cfg.Rate, cfg.Count = 200, 20 // the 20th call is due 95 ms after the start
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if min := 95 * time.Millisecond; rep.Idem.DurationSec < min.Seconds() {
		t.Fatalf("20 calls at 200/s took %.3fs, want at least %v", rep.Idem.DurationSec, min)
	}
}

// An open-loop phase ends at its duration: a caller holding a call due
// after the end does not sleep until then, which stretched the phase (by
// up to concurrency × period) and so lowered every rate it reported.
func TestOpenLoopEndsAtDuration(t *testing.T) {
	ctx := testContext(t)
	_, conns := startServer(t, 1)
	cfg := baseConfig(conns)
	// One call an hour: only the first is due within the phase.
	cfg.Rate, cfg.Count, cfg.Duration, cfg.Concurrency = 1.0/3600, 0, time.Millisecond, 4
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatalf("the phase ran until the test's deadline (%v) waiting for calls due after its end", defaultTestTimeout)
	}
	if rep.Idem.Calls != 1 {
		t.Fatalf("calls = %d, want the 1 due within the phase", rep.Idem.Calls)
	}
}

func TestFloorAndServerCPU(t *testing.T) {
	ctx := testContext(t)
	_, conns := startServer(t, 1)
	cfg := baseConfig(conns)
	cfg.Floor = true
	cfg.ServerPID = os.Getpid() // the server runs in this process
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Floor == nil || rep.Floor.Calls != 100 || rep.Floor.Errors != 0 || len(rep.Floor.Outcomes) != 0 {
		t.Fatalf("floor = %+v, want 100 calls without errors or outcomes", rep.Floor)
	}
	if rep.Ratios == nil || rep.Ratios.Throughput <= 0 || rep.Ratios.P50Latency <= 0 {
		t.Fatalf("ratios = %+v, want positive throughput and latency ratios", rep.Ratios)
	}
	for _, p := range []*Phase{rep.Floor, rep.Idem} {
		if p.ServerCPU == nil || p.ServerCPU.PID != cfg.ServerPID || p.ServerCPU.CPUUS < 0 {
			t.Fatalf("%s server cpu = %+v, want pid %d", p.Name, p.ServerCPU, cfg.ServerPID)
		}
	}
	var buf bytes.Buffer
	if err := rep.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"floor", "idem", "idem / floor: throughput", "outcomes: RESERVED=100"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, buf.String())
		}
	}
}

func TestRoundsReportMedians(t *testing.T) {
	ctx := testContext(t)
	_, conns := startServer(t, 1)
	cfg := baseConfig(conns)
	cfg.Floor, cfg.Rounds, cfg.Count = true, 3, 50
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rounds) != 3 || rep.Config.Rounds != 3 {
		t.Fatalf("rounds = %d (config %d), want 3", len(rep.Rounds), rep.Config.Rounds)
	}
	// Every round's keys are new: each Reserve of the median round reserved.
	if rep.Idem.Outcomes["RESERVED"] != 50 {
		t.Errorf("median round outcomes = %v, want RESERVED=50 (keys reused across rounds?)", rep.Idem.Outcomes)
	}
	var tps []float64
	for _, rd := range rep.Rounds {
		if rd.FloorOpsPerSec <= 0 || rd.IdemOpsPerSec <= 0 {
			t.Fatalf("round %+v lacks a rate", rd)
		}
		tps = append(tps, rd.Ratios.Throughput)
	}
	slices.Sort(tps)
	if rep.Ratios.Throughput != tps[1] {
		t.Errorf("throughput ratio %v, want the median of %v", rep.Ratios.Throughput, tps)
	}
	// Floor and Idem are the median round's phases.
	if got := rep.Idem.OpsPerSec / rep.Floor.OpsPerSec; got != tps[1] {
		t.Errorf("reported phases have ratio %v, want the median round's %v", got, tps[1])
	}
	var buf bytes.Buffer
	if err := rep.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"round 1:", "round 3:", "median of 3 rounds"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, buf.String())
		}
	}
}

func TestSummarizeEvenRounds(t *testing.T) {
	ph := func(ops, cpu float64) *Phase {
		return &Phase{OpsPerSec: ops, LatencyUS: Latency{P50: 100}, ServerCPU: &ServerCPU{CPUUSPerOp: cpu}}
	}
	rounds := []round{
		{floor: ph(100, 10), idem: ph(80, 13)}, // 0.8, 1.3
		{floor: ph(100, 10), idem: ph(90, 12)}, // 0.9, 1.2
		{floor: ph(100, 10), idem: ph(60, 16)}, // 0.6, 1.6
		{floor: ph(100, 10), idem: ph(70, 11)}, // 0.7, 1.1
	}
	_, idem, med, lines := summarize(rounds)
	if len(lines) != 4 || math.Abs(med.Throughput-0.75) > 1e-9 || math.Abs(med.ServerCPUPerOp-1.25) > 1e-9 {
		t.Errorf("medians = %+v over %d lines, want throughput 0.75 and cpu 1.25", med, len(lines))
	}
	if idem != rounds[3].idem {
		t.Errorf("median round's idem phase = %+v, want the lower middle round's (0.7)", idem)
	}
}

func TestDurationAndTimeline(t *testing.T) {
	ctx := testContext(t)
	_, conns := startServer(t, 1)
	cfg := baseConfig(conns)
	cfg.Count, cfg.Duration, cfg.Interval = 0, 300*time.Millisecond, 100*time.Millisecond
	cfg.Concurrency = 2
	var progress bytes.Buffer
	cfg.Progress, cfg.ProgressInterval = &lockedWriter{w: &progress}, 100*time.Millisecond
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := rep.Idem
	if p.Calls == 0 || len(p.Timeline) == 0 {
		t.Fatalf("calls %d, timeline %d points; want some of each", p.Calls, len(p.Timeline))
	}
	var sum float64
	prev := 0.0
	for _, pt := range p.Timeline {
		if pt.TSec <= prev {
			t.Fatalf("timeline times not increasing: %+v", p.Timeline)
		}
		prev = pt.TSec
		sum += pt.OpsPerSec
	}
	if sum == 0 {
		t.Fatalf("timeline shows no throughput: %+v", p.Timeline)
	}
	if !strings.Contains(progress.String(), "[idem]") {
		t.Fatalf("progress = %q, want [idem] lines", progress.String())
	}
}

func TestServerCPUFromProc(t *testing.T) {
	root := t.TempDir()
	write := func(pid, content string) {
		if err := os.MkdirAll(filepath.Join(root, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, pid, "stat"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A command name with a space and a parenthesis; utime 250, stime 50 ticks.
	write("42", "42 (idem d) x) S 1 42 42 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 8 0 100 0 0")
	write("43", "43 (short) S 1")
	got, err := ProcessCPU(root, 42)
	if err != nil || got != 3*time.Second {
		t.Fatalf("ProcessCPU(42) = %v, %v; want 3s", got, err)
	}
	if _, err := ProcessCPU(root, 43); err == nil {
		t.Fatal("ProcessCPU of a short stat file: want an error")
	}
	if _, err := ProcessCPU(root, 44); err == nil {
		t.Fatal("ProcessCPU of a missing process: want an error")
	}
}

func TestSVGIsWellFormed(t *testing.T) {
	ctx := testContext(t)
	_, conns := startServer(t, 1)
	cfg := baseConfig(conns)
	cfg.Floor = true
	cfg.Count, cfg.Duration, cfg.Interval = 0, 200*time.Millisecond, 50*time.Millisecond
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := rep.WriteSVG(&buf); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(&buf)
	lines := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "polyline" {
			lines++
		}
	}
	// 2 axes + 4 latency lines and 2 throughput lines... at least the data lines.
	if lines < 8 {
		t.Fatalf("SVG has %d polylines, want at least 8 (axes, 6 percentile and 2 throughput lines)", lines)
	}
}

func TestReportMatchesSchema(t *testing.T) {
	ctx := testContext(t)
	_, conns := startServer(t, 1)
	schemaBytes, err := os.ReadFile("report.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(schemaBytes, &schema); err != nil {
		t.Fatalf("report.schema.json: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*Config)
	}{
		{"plain", func(*Config) {}},
		{"floor, cpu, batch, mix", func(c *Config) {
			c.Floor, c.ServerPID, c.Batch, c.Mix, c.Count = true, os.Getpid(), 5, Mix{New: 50, Completed: 30, InFlight: 20}, 10
		}},
		{"rounds", func(c *Config) { c.Floor, c.Rounds, c.ServerPID, c.Count = true, 3, os.Getpid(), 10 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig(conns)
			tc.change(&cfg)
			rep, err := Run(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := rep.WriteJSON(&buf); err != nil {
				t.Fatal(err)
			}
			var doc any
			if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
				t.Fatal(err)
			}
			if errs := validate(schema, schema, doc, "$"); len(errs) > 0 {
				t.Fatalf("report does not match report.schema.json:\n%s\n%s", strings.Join(errs, "\n"), buf.String())
			}
			// The checker itself must catch a broken report.
			m := doc.(map[string]any)
			delete(m["idem"].(map[string]any), "latency_us")
			m["schema_version"] = 2.0
			if errs := validate(schema, schema, doc, "$"); len(errs) < 2 {
				t.Fatalf("a report without idem.latency_us and with schema_version 2 passed the schema: %v", errs)
			}
		})
	}
}
