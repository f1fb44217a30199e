package ctl

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/idemhq/idem/client"
	"github.com/idemhq/idem/internal/loadgen"
)

type benchOpts struct {
	mix         string
	op          string
	batch       int
	concurrency int
	conns       int
	duration    time.Duration
	count       int64
	keyspace    int
	payload     int
	rate        float64
	namespace   string
	plot        string
	floor       bool
	rounds      int
	serverPID   int
	progress    optBool
}

func benchFlags(fs *flag.FlagSet) any {
	o := &benchOpts{}
	fs.StringVar(&o.mix, "mix", "new=100", "share of new keys, duplicates of completed keys and of in-flight keys, e.g. new=80,completed=15,inflight=5")
	fs.StringVar(&o.op, "op", string(loadgen.OpReserveComplete), "reserve, or reserve-complete (Complete after each RESERVED)")
	fs.IntVar(&o.batch, "batch", 1, "keys per call: above 1, BatchReserve/BatchComplete of this size")
	fs.IntVar(&o.concurrency, "concurrency", 50, "concurrent callers")
	fs.IntVar(&o.conns, "conns", 1, "gRPC connections; callers are spread round-robin over them")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each phase (ignored with --count)")
	fs.Int64Var(&o.count, "count", 0, "calls per phase instead of a duration")
	fs.IntVar(&o.keyspace, "keyspace", 10000, "keys in each pool of completed and of in-flight keys")
	fs.IntVar(&o.payload, "payload", 64, "bytes of the result body a Complete stores")
	fs.Float64Var(&o.rate, "rate", 0, "open loop: calls per second over all callers, latency measured from each call's intended start (0: closed loop)")
	fs.StringVar(&o.namespace, "namespace", "idemctl-bench", "namespace of the bench's keys")
	fs.StringVar(&o.plot, "plot", "", "write a chart of latency percentiles and throughput over time to this file: .svg or .png")
	fs.BoolVar(&o.floor, "floor", false, "first run the same load against grpc.health.v1.Health/Check on the same server, and report idem's ratio to it")
	fs.IntVar(&o.rounds, "rounds", 1, "with --floor: run this many rounds of a floor and an idem phase, every other round idem first, and report the median ratios (for a noisy machine)")
	fs.IntVar(&o.serverPID, "server-pid", 0, "idemd's PID on this machine: report server CPU per op from /proc/PID/stat")
	fs.Var(&o.progress, "progress", "print progress every second on stderr (default: when stderr is a terminal)")
	return o
}

func runBench(ctx context.Context, r *invocation, pos []string, opts any) error {
	o := opts.(*benchOpts)
	if err := noArgs(pos); err != nil {
		return err
	}
	mix, err := loadgen.ParseMix(o.mix)
	if err != nil {
		return usageError{err}
	}
	if o.plot != "" && plotWriter(o.plot) == nil {
		return usagef("--plot %s: the chart is written as SVG or PNG, chosen by the name: end it in .svg or .png", o.plot)
	}
	if o.conns < 1 {
		return usagef("--conns %d: must be at least 1", o.conns)
	}
	// loadgen takes 0 for 1 in both; said on the command line, 0 is a
	// mistake to point out, not to run as something else.
	if o.batch < 1 || o.batch > 1000 {
		return usagef("--batch %d: must be 1–1000 (1: single calls)", o.batch)
	}
	if o.rounds < 1 || o.rounds > 100 {
		return usagef("--rounds %d: must be 1–100", o.rounds)
	}
	// loadgen takes NaN and Inf as closed loop (and then cannot write
	// them as JSON), and a period under 1ns truncates to closed loop too.
	if math.IsNaN(o.rate) || math.IsInf(o.rate, 0) || o.rate > float64(time.Second) {
		return usagef("--rate %v: want calls per second, at most %d (0: closed loop)", o.rate, int64(time.Second))
	}
	// The body is allocated up front and sent whole, up to a batch of them
	// in one call: past gRPC's largest message it can never be sent, and
	// a typo runs idemctl out of memory.
	if o.payload > 0 && o.payload > maxBenchRequest/o.batch {
		return usagef("--payload %d: a call of %d such bodies would carry more than %d bytes, the largest gRPC message", o.payload, o.batch, maxBenchRequest)
	}
	cfg := loadgen.Config{
		Target: r.g.addr, Op: loadgen.Op(o.op), Mix: mix, Batch: o.batch, Concurrency: o.concurrency,
		Duration: o.duration, Count: o.count, Keyspace: o.keyspace, Payload: o.payload, Rate: o.rate,
		Namespace: o.namespace, Tenant: r.g.tenant, Timeout: r.g.timeout, Floor: o.floor, Rounds: o.rounds, ServerPID: o.serverPID,
	}
	// Validate before connecting, with stand-in connections, so argument
	// errors are usage errors whatever the address.
	cfg.Conns = make([]grpc.ClientConnInterface, o.conns)
	for i := range cfg.Conns {
		cfg.Conns[i] = (*grpc.ClientConn)(nil)
	}
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}
	if o.serverPID > 0 {
		if _, err := loadgen.ProcessCPU("", o.serverPID); err != nil {
			return usagef("--server-pid %d: %v", o.serverPID, err)
		}
	}
	if o.progress.set && o.progress.v || !o.progress.set && r.env.StderrIsTTY {
		cfg.Progress = r.env.Stderr
	}
	copts, err := r.g.clientOptions()
	if err != nil {
		return err
	}
	var clients []*client.Client
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for i := range cfg.Conns {
		c, err := client.New(r.g.addr, copts...)
		if err != nil {
			return err
		}
		clients = append(clients, c)
		cfg.Conns[i] = c.Conn()
		r.conn = c.Conn() // for error classification
		pctx, cancel := context.WithTimeout(ctx, r.g.timeout)
		err = ping(pctx, c.Conn())
		cancel()
		if err != nil {
			return err
		}
	}
	rep, err := loadgen.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if o.plot != "" {
		if err := writePlot(o.plot, rep); err != nil {
			return err
		}
	}
	if r.g.output == "json" {
		if err := rep.WriteJSON(r.env.Stdout); err != nil {
			return err
		}
	} else if err := rep.WriteText(r.env.Stdout); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return benchErrors(rep)
}

// benchErrors fails a run in which any call failed, after its report is
// out: a measurement taken while calls failed is not one to keep, and a
// script must see it without reading the report. Outcomes (COMPLETED,
// IN_PROGRESS, MISMATCH) are answers, not errors. With several rounds the
// report's phases are the median round's, but every round's ratios enter
// the medians (and its rate bench/lib.sh's median_idem_rate): a failure in
// any round fails the run.
func benchErrors(rep *loadgen.Report) error {
	if p := rep.Idem; p != nil && (p.Calls == 0 || p.Errors >= p.Ops) {
		return fmt.Errorf("bench: no call succeeded (errors: %v)", p.ErrorsByCode)
	}
	if p := rep.Idem; p != nil && p.Errors > 0 {
		return fmt.Errorf("bench: %d of %d operations failed (errors: %v)", p.Errors, p.Ops, p.ErrorsByCode)
	}
	if p := rep.Floor; p != nil && p.Errors > 0 {
		return fmt.Errorf("bench: floor: %d of %d health checks failed (errors: %v)", p.Errors, p.Ops, p.ErrorsByCode)
	}
	for i, rd := range rep.Rounds {
		if rd.FloorErrors > 0 || rd.IdemErrors > 0 {
			return fmt.Errorf("bench: round %d: %d idem operations and %d health checks failed", i+1, rd.IdemErrors, rd.FloorErrors)
		}
	}
	return nil
}

// maxBenchRequest is the largest message a gRPC client sends by default.
const maxBenchRequest = math.MaxInt32

// plotWriter picks the chart's format by the file's extension; nil if it is
// neither .svg nor .png.
func plotWriter(path string) func(*loadgen.Report, io.Writer) error {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".svg":
		return (*loadgen.Report).WriteSVG
	case ".png":
		return (*loadgen.Report).WritePNG
	}
	return nil
}

func writePlot(path string, rep *loadgen.Report) error {
	write := plotWriter(path)
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--plot: %w", err)
	}
	if err := write(rep, f); err != nil {
		f.Close()
		return fmt.Errorf("--plot: %w", err)
	}
	return f.Close()
}
