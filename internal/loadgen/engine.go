package loadgen

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// setupChunk is the batch size used to fill the key pools before a run;
// well under the server's default batch limit.
const setupChunk = 200

// Run executes the floor phase (when asked for) and then the idem phase,
// and returns the report. It stops early, with what it measured, when ctx
// ends.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var id [6]byte
	_, _ = rand.Read(id[:])
	fp := sha256.Sum256([]byte("idemctl bench"))
	r := &runner{cfg: cfg, runID: "bench-" + hex.EncodeToString(id[:]), fingerprint: fp[:]}
	rep := &Report{
		SchemaVersion: SchemaVersion,
		Tool:          "idemctl bench",
		Target:        cfg.Target,
		StartedAt:     time.Now().UTC(),
		Config: ReportConfig{
			Op: cfg.Op, Mix: cfg.Mix, Batch: cfg.batchSize(), Concurrency: cfg.Concurrency, Conns: len(cfg.Conns),
			DurationSec: cfg.Duration.Seconds(), Count: cfg.Count, Keyspace: cfg.Keyspace, PayloadBytes: cfg.Payload,
			Rate: cfg.Rate, Rounds: max(1, cfg.Rounds), Namespace: cfg.Namespace, Tenant: cfg.Tenant, ServerPID: cfg.ServerPID,
		},
	}
	if err := r.fillPools(ctx); err != nil {
		return nil, err
	}
	if !cfg.Floor {
		p, err := r.phase(ctx, "idem", r.idemCall)
		if err != nil {
			return nil, err
		}
		rep.Idem = p
		return rep, nil
	}
	var rounds []round
	for i := range max(1, cfg.Rounds) {
		// Every other round runs idem first: work a phase leaves behind
		// (idemd's GC, pebble's flushes) then falls mostly on a phase of
		// its own kind instead of always on the floor that follows it.
		rd := round{idemFirst: i%2 == 1}
		phases := []struct {
			name string
			call callFunc
			out  **Phase
		}{{"floor", r.healthCall, &rd.floor}, {"idem", r.idemCall, &rd.idem}}
		if rd.idemFirst {
			phases[0], phases[1] = phases[1], phases[0]
		}
		stopped := false
		for _, ph := range phases {
			p, err := r.phase(ctx, ph.name, ph.call)
			if err != nil {
				return nil, err
			}
			*ph.out = p
			if ctx.Err() != nil {
				stopped = true
				break
			}
		}
		if rd.floor != nil && rd.idem != nil {
			rounds = append(rounds, rd)
		}
		if stopped {
			break
		}
	}
	if len(rounds) == 0 {
		return rep, nil
	}
	rep.Floor, rep.Idem, rep.Ratios, rep.Rounds = summarize(rounds)
	return rep, nil
}

type round struct {
	floor, idem *Phase
	idemFirst   bool
}

// summarize reports the phases of the median round (by throughput ratio),
// the median of each ratio over the rounds, and a line per round when
// there was more than one.
func summarize(rounds []round) (floor, idem *Phase, med *Ratios, lines []Round) {
	rs := make([]*Ratios, len(rounds))
	for i, rd := range rounds {
		rs[i] = ratios(rd.idem, rd.floor)
	}
	byThroughput := make([]int, len(rounds))
	for i := range byThroughput {
		byThroughput[i] = i
	}
	slices.SortStableFunc(byThroughput, func(a, b int) int { return cmp.Compare(rs[a].Throughput, rs[b].Throughput) })
	m := byThroughput[(len(rounds)-1)/2]
	floor, idem = rounds[m].floor, rounds[m].idem
	if len(rounds) == 1 {
		return floor, idem, rs[0], nil
	}
	median := func(f func(*Ratios) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		if n := len(v); n%2 == 0 {
			return (v[n/2-1] + v[n/2]) / 2
		}
		return v[len(v)/2]
	}
	med = &Ratios{
		Throughput:     median(func(r *Ratios) float64 { return r.Throughput }),
		P50Latency:     median(func(r *Ratios) float64 { return r.P50Latency }),
		ServerCPUPerOp: median(func(r *Ratios) float64 { return r.ServerCPUPerOp }),
	}
	for i, rd := range rounds {
		l := Round{IdemFirst: rd.idemFirst, FloorOpsPerSec: rd.floor.OpsPerSec, IdemOpsPerSec: rd.idem.OpsPerSec, FloorErrors: rd.floor.Errors, IdemErrors: rd.idem.Errors, Ratios: *rs[i]}
		if rd.floor.ServerCPU != nil && rd.idem.ServerCPU != nil {
			l.FloorCPUUSPerOp, l.IdemCPUUSPerOp = rd.floor.ServerCPU.CPUUSPerOp, rd.idem.ServerCPU.CPUUSPerOp
		}
		lines = append(lines, l)
	}
	return floor, idem, med, lines
}

type runner struct {
	cfg         Config
	runID       string
	fingerprint []byte
	body        []byte
	phases      int // phases started, so each phase's new keys are its own
}

// worker is one closed-loop caller.
type worker struct {
	idx    int
	idem   idemv1.IdempotencyServiceClient
	health healthpb.HealthClient
	rng    *mrand.Rand
	prefix string // of the worker's new keys
	seq    uint64
	rec    *recorder
}

func (r *runner) newKey(w *worker) string {
	w.seq++
	return w.prefix + strconv.FormatUint(w.seq, 36)
}

func (r *runner) poolKey(kind string, i int) string {
	return r.runID + "-" + kind + "-" + strconv.Itoa(i)
}

// inflightLease keeps the in-flight pool's leases alive for the whole run.
const inflightLease = time.Hour

// fillPools completes the "completed" pool and reserves the "inflight" pool
// before anything is measured, so their answers are known.
func (r *runner) fillPools(ctx context.Context) error {
	r.body = make([]byte, r.cfg.Payload)
	for i := range r.body {
		r.body[i] = 'a' + byte(i%26)
	}
	c := idemv1.NewIdempotencyServiceClient(r.cfg.Conns[0])
	for _, pool := range []struct {
		kind     string
		n        int
		complete bool
	}{{"c", r.cfg.Keyspace, true}, {"i", r.cfg.Keyspace, false}} {
		if (pool.complete && r.cfg.Mix.Completed == 0) || (!pool.complete && r.cfg.Mix.InFlight == 0) {
			continue
		}
		for start := 0; start < pool.n; start += setupChunk {
			req := &idemv1.BatchReserveRequest{Tenant: r.cfg.Tenant, Namespace: r.cfg.Namespace}
			if !pool.complete {
				req.LeaseTtl = durationpb.New(inflightLease)
			}
			for i := start; i < min(start+setupChunk, pool.n); i++ {
				req.Items = append(req.Items, &idemv1.BatchReserveRequest_Item{Key: r.poolKey(pool.kind, i), Fingerprint: r.fingerprint})
			}
			resp, err := setupCall(ctx, r.cfg.Timeout, func(ctx context.Context) (*idemv1.BatchReserveResponse, error) { return c.BatchReserve(ctx, req) })
			if err != nil {
				return fmt.Errorf("idem: filling the key pool: %w", err)
			}
			comp := &idemv1.BatchCompleteRequest{Tenant: r.cfg.Tenant, Namespace: r.cfg.Namespace}
			for i, res := range resp.GetResults() {
				if res.GetError() != nil || res.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
					return fmt.Errorf("idem: filling the key pool: key %s answered %v %v", req.Items[i].Key, res.GetOutcome(), res.GetError())
				}
				comp.Items = append(comp.Items, &idemv1.BatchCompleteRequest_Item{Key: req.Items[i].Key, Token: res.GetRecord().GetToken(), Result: &idemv1.Result{Body: r.body}})
			}
			if !pool.complete {
				continue
			}
			cresp, err := setupCall(ctx, r.cfg.Timeout, func(ctx context.Context) (*idemv1.BatchCompleteResponse, error) { return c.BatchComplete(ctx, comp) })
			if err != nil {
				return fmt.Errorf("idem: filling the key pool: %w", err)
			}
			for i, res := range cresp.GetResults() {
				if res.GetError() != nil {
					return fmt.Errorf("idem: filling the key pool: completing %s: %v", comp.Items[i].Key, res.GetError())
				}
			}
		}
	}
	return nil
}

func setupCall[T any](ctx context.Context, timeout time.Duration, f func(context.Context) (T, error)) (T, error) {
	cctx, cancel := context.WithTimeout(ctx, max(timeout, 30*time.Second))
	defer cancel()
	return f(cctx)
}

type callFunc func(ctx context.Context, w *worker, t *tally) error

func (r *runner) phase(ctx context.Context, name string, call callFunc) (*Phase, error) {
	cfg := r.cfg
	r.phases++
	workers := make([]*worker, cfg.Concurrency)
	recs := make([]*recorder, cfg.Concurrency)
	for i := range workers {
		conn := cfg.Conns[i%len(cfg.Conns)]
		recs[i] = newRecorder()
		workers[i] = &worker{
			idx:    i,
			idem:   idemv1.NewIdempotencyServiceClient(conn),
			health: healthpb.NewHealthClient(conn),
			rng:    mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), uint64(i))),
			prefix: r.runID + "-n" + strconv.Itoa(r.phases) + "-" + strconv.Itoa(i) + "-",
			rec:    recs[i],
		}
	}
	cpuBefore, cpuErr := r.serverCPU()
	if cpuErr != nil {
		return nil, cpuErr
	}
	start := time.Now()
	var end time.Time
	if cfg.Count == 0 {
		end = start.Add(cfg.Duration)
	}
	var period time.Duration
	if cfg.Rate > 0 {
		period = time.Duration(float64(time.Second) / cfg.Rate)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if cfg.Count > 0 && i >= cfg.Count {
					return
				}
				intended := time.Now()
				if period > 0 {
					intended = start.Add(time.Duration(i) * period)
					// A call due after the end is not waited for: the
					// wait would stretch the phase and lower its rates.
					if !end.IsZero() && !intended.Before(end) {
						return
					}
					if !sleepUntil(ctx, intended) {
						return
					}
				}
				if ctx.Err() != nil || (!end.IsZero() && !intended.Before(end)) {
					return
				}
				cctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
				var t tally
				err := call(cctx, w, &t)
				cancel()
				if ctx.Err() != nil {
					return // the run was stopped: this call's failure is ours
				}
				if err != nil {
					t.addErr(status.Code(err).String(), int64(max(1, t.ops)))
				}
				w.rec.record(time.Since(intended), &t)
			}
		})
	}
	done := make(chan struct{})
	var timeline []Point
	var tlDone sync.WaitGroup
	tlDone.Go(func() {
		tick := time.NewTicker(cfg.interval())
		defer tick.Stop()
		var progress <-chan time.Time
		if cfg.Progress != nil {
			pi := cfg.ProgressInterval
			if pi <= 0 {
				pi = time.Second
			}
			pt := time.NewTicker(pi)
			defer pt.Stop()
			progress = pt.C
		}
		last := start
		for {
			select {
			case now := <-tick.C:
				timeline = append(timeline, point(drainInterval(recs), start, last, now))
				last = now
			case now := <-progress:
				tot, _, _ := totals(recs)
				el := now.Sub(start).Seconds()
				fmt.Fprintf(cfg.Progress, "[%s] %5.0fs  %9.0f ops/s  errors %d  p50 %s  p99 %s\n", name, el, float64(tot.okOps())/el, tot.errors,
					fmtUS(tot.hist.ValueAtQuantile(50)), fmtUS(tot.hist.ValueAtQuantile(99)))
			case <-done:
				// A last bucket much shorter than the interval gives a
				// meaningless rate; its calls are in the totals all the same.
				now := time.Now()
				if w := drainInterval(recs); w.calls > 0 && (len(timeline) == 0 || now.Sub(last) >= cfg.interval()/2) {
					timeline = append(timeline, point(w, start, last, now))
				}
				return
			}
		}
	})
	wg.Wait()
	elapsed := time.Since(start)
	close(done)
	tlDone.Wait()
	cpuAfter, cpuErr := r.serverCPU()
	if cpuErr != nil {
		return nil, cpuErr
	}
	tot, byCode, outcomes := totals(recs)
	p := &Phase{
		Name: name, Calls: tot.calls, Ops: tot.ops, Errors: tot.errors, ErrorsByCode: byCode, Outcomes: outcomes,
		DurationSec: elapsed.Seconds(), LatencyUS: latencyOf(tot.hist), Timeline: timeline,
	}
	if timeline == nil {
		p.Timeline = []Point{}
	}
	if s := elapsed.Seconds(); s > 0 {
		p.CallsPerSec = float64(tot.calls-tot.failed) / s
		p.OpsPerSec = float64(tot.okOps()) / s
	}
	if cfg.ServerPID > 0 {
		used := cpuAfter - cpuBefore
		p.ServerCPU = &ServerCPU{PID: cfg.ServerPID, CPUUS: used.Microseconds(), Cores: used.Seconds() / elapsed.Seconds()}
		if ok := tot.okOps(); ok > 0 {
			p.ServerCPU.CPUUSPerOp = float64(used.Microseconds()) / float64(ok)
		}
	}
	return p, nil
}

func point(w window, start, from, to time.Time) Point {
	width := to.Sub(from).Seconds()
	p := Point{TSec: to.Sub(start).Seconds(), Errors: w.errors}
	if width > 0 {
		p.OpsPerSec = float64(w.okOps()) / width
	}
	if w.calls > 0 {
		p.P50US = w.hist.ValueAtQuantile(50)
		p.P90US = w.hist.ValueAtQuantile(90)
		p.P99US = w.hist.ValueAtQuantile(99)
		p.MaxUS = w.hist.Max()
	}
	return p
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (r *runner) serverCPU() (time.Duration, error) {
	if r.cfg.ServerPID <= 0 {
		return 0, nil
	}
	return ProcessCPU(r.cfg.ProcRoot, r.cfg.ServerPID)
}

func (r *runner) healthCall(ctx context.Context, w *worker, t *tally) error {
	t.ops = 1
	resp, err := w.health.Check(ctx, &healthpb.HealthCheckRequest{})
	if err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.addErr("NOT_SERVING", 1)
	}
	return err
}

type keyKind int

const (
	kindNew keyKind = iota
	kindCompleted
	kindInFlight
)

func (r *runner) pick(w *worker) keyKind {
	n := w.rng.IntN(100)
	switch {
	case n < r.cfg.Mix.New:
		return kindNew
	case n < r.cfg.Mix.New+r.cfg.Mix.Completed:
		return kindCompleted
	default:
		return kindInFlight
	}
}

func outcomeName(o idemv1.ReserveOutcome) string {
	switch o {
	case idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED:
		return "RESERVED"
	case idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED:
		return "COMPLETED"
	case idemv1.ReserveOutcome_RESERVE_OUTCOME_IN_PROGRESS:
		return "IN_PROGRESS"
	case idemv1.ReserveOutcome_RESERVE_OUTCOME_MISMATCH:
		return "MISMATCH"
	}
	return o.String()
}

func (r *runner) idemCall(ctx context.Context, w *worker, t *tally) error {
	if r.cfg.Batch > 1 {
		return r.batchCall(ctx, w, t)
	}
	t.ops = 1
	var key string
	switch r.pick(w) {
	case kindNew:
		key = r.newKey(w)
	case kindCompleted:
		key = r.poolKey("c", w.rng.IntN(r.cfg.Keyspace))
	case kindInFlight:
		key = r.poolKey("i", w.rng.IntN(r.cfg.Keyspace))
	}
	resp, err := w.idem.Reserve(ctx, &idemv1.ReserveRequest{Tenant: r.cfg.Tenant, Namespace: r.cfg.Namespace, Key: key, Fingerprint: r.fingerprint})
	if err != nil {
		return err
	}
	t.addOutcome(resp.GetOutcome())
	if r.cfg.Op != OpReserveComplete || resp.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
		return nil
	}
	_, err = w.idem.Complete(ctx, &idemv1.CompleteRequest{Tenant: r.cfg.Tenant, Namespace: r.cfg.Namespace, Key: key, Token: resp.GetRecord().GetToken(), Result: &idemv1.Result{Body: r.body}})
	return err
}

func (r *runner) batchCall(ctx context.Context, w *worker, t *tally) error {
	n := r.cfg.Batch
	t.ops = n
	req := &idemv1.BatchReserveRequest{Tenant: r.cfg.Tenant, Namespace: r.cfg.Namespace, Items: make([]*idemv1.BatchReserveRequest_Item, 0, n)}
	// Pool keys of one batch are consecutive from a random start, so they
	// are distinct (a batch may not name a key twice).
	var cStart, iStart, cN, iN int
	if r.cfg.Keyspace > 0 {
		cStart, iStart = w.rng.IntN(r.cfg.Keyspace), w.rng.IntN(r.cfg.Keyspace)
	}
	for range n {
		var key string
		switch r.pick(w) {
		case kindNew:
			key = r.newKey(w)
		case kindCompleted:
			key = r.poolKey("c", (cStart+cN)%r.cfg.Keyspace)
			cN++
		case kindInFlight:
			key = r.poolKey("i", (iStart+iN)%r.cfg.Keyspace)
			iN++
		}
		req.Items = append(req.Items, &idemv1.BatchReserveRequest_Item{Key: key, Fingerprint: r.fingerprint})
	}
	resp, err := w.idem.BatchReserve(ctx, req)
	if err != nil {
		return err
	}
	// Items the answer lacks were not handled: not served ops.
	if missing := n - len(resp.GetResults()); missing > 0 {
		t.addErr(noResult, int64(missing))
	}
	comp := &idemv1.BatchCompleteRequest{Tenant: r.cfg.Tenant, Namespace: r.cfg.Namespace}
	for i, res := range resp.GetResults() {
		if e := res.GetError(); e != nil {
			t.addErr(codes.Code(e.GetCode()).String(), 1)
			continue
		}
		t.addOutcome(res.GetOutcome())
		if r.cfg.Op == OpReserveComplete && res.GetOutcome() == idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
			comp.Items = append(comp.Items, &idemv1.BatchCompleteRequest_Item{Key: req.Items[i].Key, Token: res.GetRecord().GetToken(), Result: &idemv1.Result{Body: r.body}})
		}
	}
	if len(comp.Items) == 0 {
		return nil
	}
	cresp, err := w.idem.BatchComplete(ctx, comp)
	if err != nil {
		// Only the items it completes failed; the others are counted already.
		t.addErr(status.Code(err).String(), int64(len(comp.Items)))
		return nil
	}
	for _, res := range cresp.GetResults() {
		if e := res.GetError(); e != nil {
			t.addErr(codes.Code(e.GetCode()).String(), 1)
		}
	}
	if missing := len(comp.Items) - len(cresp.GetResults()); missing > 0 {
		t.addErr(noResult, int64(missing))
	}
	return nil
}

// noResult counts batch items the server's answer left out.
const noResult = "NO_RESULT"
