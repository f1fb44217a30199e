package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// SchemaVersion is the report's schema_version; report.schema.json
// describes it. Fields are only ever added.
const SchemaVersion = 1

// Report is the result of one bench invocation.
type Report struct {
	SchemaVersion int          `json:"schema_version"`
	Tool          string       `json:"tool"`
	Target        string       `json:"target"`
	StartedAt     time.Time    `json:"started_at"`
	Config        ReportConfig `json:"config"`
	// Floor is the health-check phase, when asked for. With several
	// rounds, Floor and Idem are the phases of the median round (by
	// throughput ratio).
	Floor *Phase `json:"floor,omitempty"`
	Idem  *Phase `json:"idem"`
	// Ratios compare idem with the floor, when there is one; with several
	// rounds, each is the median of the rounds' ratios.
	Ratios *Ratios `json:"ratios,omitempty"`
	// Rounds has a line per round when there was more than one.
	Rounds []Round `json:"rounds,omitempty"`
}

// Round is one floor phase and the idem phase right after it.
type Round struct {
	// IdemFirst: this round ran its idem phase before its floor (every
	// other round does).
	IdemFirst       bool    `json:"idem_first"`
	FloorOpsPerSec  float64 `json:"floor_ops_per_sec"`
	IdemOpsPerSec   float64 `json:"idem_ops_per_sec"`
	FloorCPUUSPerOp float64 `json:"floor_cpu_us_per_op,omitempty"`
	IdemCPUUSPerOp  float64 `json:"idem_cpu_us_per_op,omitempty"`
	// Failed ops of each phase: every round's ratios enter the medians,
	// not only the median round's, so every round's failures are shown.
	FloorErrors int64  `json:"floor_errors"`
	IdemErrors  int64  `json:"idem_errors"`
	Ratios      Ratios `json:"ratios"`
}

// ReportConfig is the workload as run.
type ReportConfig struct {
	Op           Op      `json:"op"`
	Mix          Mix     `json:"mix"`
	Batch        int     `json:"batch"`
	Concurrency  int     `json:"concurrency"`
	Conns        int     `json:"conns"`
	DurationSec  float64 `json:"duration_s"`
	Count        int64   `json:"count"`
	Keyspace     int     `json:"keyspace"`
	PayloadBytes int     `json:"payload_bytes"`
	Rate         float64 `json:"rate"`
	Rounds       int     `json:"rounds"`
	Namespace    string  `json:"namespace"`
	Tenant       string  `json:"tenant"`
	ServerPID    int     `json:"server_pid"`
}

// Phase is one measured load: the floor or idem.
type Phase struct {
	Name string `json:"name"`
	// Calls are RPCs (a BatchReserve is one call); Ops are keys handled
	// (a batch of N is N ops). Without batches they are equal.
	Calls        int64            `json:"calls"`
	Ops          int64            `json:"ops"`
	Errors       int64            `json:"errors"`
	ErrorsByCode map[string]int64 `json:"errors_by_code"`
	// Outcomes counts Reserve answers by outcome name (idem phase only).
	Outcomes    map[string]int64 `json:"outcomes"`
	DurationSec float64          `json:"duration_s"`
	// The rates count only calls and ops that did not fail.
	CallsPerSec float64 `json:"calls_per_sec"`
	OpsPerSec   float64 `json:"ops_per_sec"`
	// LatencyUS is per call, in microseconds; in open-loop mode measured
	// from the call's intended start.
	LatencyUS Latency    `json:"latency_us"`
	ServerCPU *ServerCPU `json:"server_cpu,omitempty"`
	Timeline  []Point    `json:"timeline"`
}

// Latency percentiles in microseconds.
type Latency struct {
	P50  int64   `json:"p50"`
	P90  int64   `json:"p90"`
	P99  int64   `json:"p99"`
	P999 int64   `json:"p999"`
	Max  int64   `json:"max"`
	Mean float64 `json:"mean"`
}

// ServerCPU is the server's utime+stime over a phase; per op is per op
// that did not fail.
type ServerCPU struct {
	PID        int     `json:"pid"`
	CPUUS      int64   `json:"cpu_us"`
	CPUUSPerOp float64 `json:"cpu_us_per_op"`
	// Cores is the CPU time divided by the phase's wall time.
	Cores float64 `json:"cores"`
}

// Point is one timeline bucket, ending TSec seconds after the phase began.
type Point struct {
	TSec      float64 `json:"t_s"`
	OpsPerSec float64 `json:"ops_per_sec"`
	Errors    int64   `json:"errors"`
	P50US     int64   `json:"p50_us"`
	P90US     int64   `json:"p90_us"`
	P99US     int64   `json:"p99_us"`
	MaxUS     int64   `json:"max_us"`
}

// Ratios of idem to the floor.
type Ratios struct {
	// Throughput is idem ops/s ÷ floor ops/s: 1 means idem costs nothing
	// beyond a gRPC round trip.
	Throughput float64 `json:"throughput"`
	// P50Latency is idem p50 ÷ floor p50.
	P50Latency float64 `json:"p50_latency"`
	// ServerCPUPerOp is idem server CPU per op ÷ floor's (with a server PID).
	ServerCPUPerOp float64 `json:"server_cpu_per_op,omitempty"`
}

func ratios(idem, floor *Phase) *Ratios {
	if floor == nil || idem == nil {
		return nil
	}
	r := &Ratios{}
	if floor.OpsPerSec > 0 {
		r.Throughput = idem.OpsPerSec / floor.OpsPerSec
	}
	if floor.LatencyUS.P50 > 0 {
		r.P50Latency = float64(idem.LatencyUS.P50) / float64(floor.LatencyUS.P50)
	}
	if idem.ServerCPU != nil && floor.ServerCPU != nil && floor.ServerCPU.CPUUSPerOp > 0 {
		r.ServerCPUPerOp = idem.ServerCPU.CPUUSPerOp / floor.ServerCPU.CPUUSPerOp
	}
	return r
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func fmtUS(us int64) string {
	switch {
	case us >= 1_000_000:
		return fmt.Sprintf("%.2fs", float64(us)/1e6)
	case us >= 1000:
		return fmt.Sprintf("%.2fms", float64(us)/1e3)
	default:
		return fmt.Sprintf("%dµs", us)
	}
}

func fmtCounts(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

// WriteText writes the human summary.
func (r *Report) WriteText(w io.Writer) error {
	c := r.Config
	fmt.Fprintf(w, "target %s  op %s  mix %s  batch %d  concurrency %d  conns %d", r.Target, c.Op, c.Mix, max(1, c.Batch), c.Concurrency, c.Conns)
	if c.Rate > 0 {
		fmt.Fprintf(w, "  rate %.0f/s (open loop)", c.Rate)
	}
	fmt.Fprintln(w)
	if len(r.Rounds) > 1 {
		// The phases below are one round's; each ratio further down is the
		// median over the rounds, so the two need not agree.
		fmt.Fprintln(w, "phases of the median round by throughput ratio:")
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tcalls\tops\tops/s\terrors\tp50\tp90\tp99\tp99.9\tmax\tsrv cpu/op\t")
	for _, p := range []*Phase{r.Floor, r.Idem} {
		if p == nil {
			continue
		}
		cpu := "-"
		if p.ServerCPU != nil {
			cpu = fmt.Sprintf("%.1fµs", p.ServerCPU.CPUUSPerOp)
		}
		l := p.LatencyUS
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", p.Name, p.Calls, p.Ops, p.OpsPerSec, p.Errors,
			fmtUS(l.P50), fmtUS(l.P90), fmtUS(l.P99), fmtUS(l.P999), fmtUS(l.Max), cpu)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.Idem != nil {
		fmt.Fprintf(w, "outcomes: %s\n", fmtCounts(r.Idem.Outcomes))
		fmt.Fprintf(w, "errors:   %s\n", fmtCounts(r.Idem.ErrorsByCode))
	}
	if r.Floor != nil && r.Floor.Errors > 0 {
		fmt.Fprintf(w, "floor errors: %s\n", fmtCounts(r.Floor.ErrorsByCode))
	}
	for i, rd := range r.Rounds {
		if rd.IdemFirst {
			fmt.Fprintf(w, "round %d: idem %.0f ops/s, floor %.0f ops/s: throughput %.2fx  p50 latency %.2fx", i+1, rd.IdemOpsPerSec, rd.FloorOpsPerSec, rd.Ratios.Throughput, rd.Ratios.P50Latency)
		} else {
			fmt.Fprintf(w, "round %d: floor %.0f ops/s, idem %.0f ops/s: throughput %.2fx  p50 latency %.2fx", i+1, rd.FloorOpsPerSec, rd.IdemOpsPerSec, rd.Ratios.Throughput, rd.Ratios.P50Latency)
		}
		if rd.Ratios.ServerCPUPerOp > 0 {
			fmt.Fprintf(w, "  server CPU per op %.1fµs / %.1fµs = %.2fx", rd.IdemCPUUSPerOp, rd.FloorCPUUSPerOp, rd.Ratios.ServerCPUPerOp)
		}
		if rd.FloorErrors > 0 || rd.IdemErrors > 0 {
			fmt.Fprintf(w, "  errors: floor %d, idem %d", rd.FloorErrors, rd.IdemErrors)
		}
		fmt.Fprintln(w)
	}
	if q := r.Ratios; q != nil {
		if len(r.Rounds) > 1 {
			fmt.Fprintf(w, "median of %d rounds, ", len(r.Rounds))
		}
		fmt.Fprintf(w, "idem / floor: throughput %.2fx  p50 latency %.2fx", q.Throughput, q.P50Latency)
		if q.ServerCPUPerOp > 0 {
			fmt.Fprintf(w, "  server CPU per op %.2fx", q.ServerCPUPerOp)
		}
		fmt.Fprintln(w)
	}
	return nil
}
