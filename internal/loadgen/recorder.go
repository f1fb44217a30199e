package loadgen

import (
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// Latencies are recorded in microseconds from 1 µs to 10 minutes with three
// significant digits: 0.1% resolution, whatever the magnitude.
const (
	histMin     = 1
	histMax     = int64(10 * time.Minute / time.Microsecond)
	histSigFigs = 3
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histSigFigs) }

// recorder is one worker's tally. Each worker has its own, so recording
// takes an uncontended lock; the ticker takes it once a second to drain the
// interval histogram.
type recorder struct {
	mu       sync.Mutex
	total    *hdrhistogram.Histogram
	interval *hdrhistogram.Histogram
	calls    int64
	ops      int64
	errors   int64
	failed   int64 // calls with an error
	iCalls   int64
	iOps     int64
	iErrors  int64
	byCode   map[string]int64
	outcomes outcomeCounts
}

func newRecorder() *recorder {
	return &recorder{total: newHist(), interval: newHist(), byCode: map[string]int64{}}
}

// outcomeCounts counts Reserve answers by outcome number. A fixed array,
// not a map: a map per call made the idem phase's callers allocate where
// the floor's do not, and on a machine the server shares that skews the ratio.
type outcomeCounts struct {
	known [5]int64         // by ReserveOutcome value
	other map[string]int64 // values newer than this build
}

func (c *outcomeCounts) add(o idemv1.ReserveOutcome, n int64) {
	if o >= 0 && int(o) < len(c.known) {
		c.known[o] += n
		return
	}
	if c.other == nil {
		c.other = map[string]int64{}
	}
	c.other[outcomeName(o)] += n
}

func (c *outcomeCounts) addAll(from *outcomeCounts) {
	for i, n := range from.known {
		c.known[i] += n
	}
	for o, n := range from.other {
		if c.other == nil {
			c.other = map[string]int64{}
		}
		c.other[o] += n
	}
}

func (c *outcomeCounts) byName() map[string]int64 {
	m := map[string]int64{}
	for i, n := range c.known {
		if n > 0 {
			m[outcomeName(idemv1.ReserveOutcome(i))] += n
		}
	}
	for o, n := range c.other {
		m[o] += n
	}
	return m
}

// tally is what one call adds.
type tally struct {
	ops      int
	errs     map[string]int64 // by code name
	outcomes outcomeCounts
}

func (t *tally) addErr(code string, n int64) {
	if t.errs == nil {
		t.errs = map[string]int64{}
	}
	t.errs[code] += n
}

func (t *tally) addOutcome(o idemv1.ReserveOutcome) { t.outcomes.add(o, 1) }

func (r *recorder) record(lat time.Duration, t *tally) {
	us := max(lat.Microseconds(), histMin)
	us = min(us, histMax)
	r.mu.Lock()
	defer r.mu.Unlock()
	_ = r.total.RecordValue(us)
	_ = r.interval.RecordValue(us)
	r.calls++
	r.iCalls++
	r.ops += int64(t.ops)
	r.iOps += int64(t.ops)
	if len(t.errs) > 0 {
		r.failed++
	}
	for c, n := range t.errs {
		r.byCode[c] += n
		r.errors += n
		r.iErrors += n
	}
	r.outcomes.addAll(&t.outcomes)
}

// window is the drained interval of all workers, or their totals.
type window struct {
	hist   *hdrhistogram.Histogram
	calls  int64
	ops    int64
	errors int64
	failed int64 // calls with an error (totals only)
}

// okOps are the ops that did not fail: rates and CPU per op count only
// these, so fast refusals (RESOURCE_EXHAUSTED, NOT_SERVING) do not pass for
// served ops.
func (w window) okOps() int64 { return max(0, w.ops-w.errors) }

func drainInterval(rs []*recorder) window {
	w := window{hist: newHist()}
	for _, r := range rs {
		r.mu.Lock()
		w.hist.Merge(r.interval)
		r.interval.Reset()
		w.calls += r.iCalls
		w.ops += r.iOps
		w.errors += r.iErrors
		r.iCalls, r.iOps, r.iErrors = 0, 0, 0
		r.mu.Unlock()
	}
	return w
}

func totals(rs []*recorder) (window, map[string]int64, map[string]int64) {
	w := window{hist: newHist()}
	byCode := map[string]int64{}
	var outcomes outcomeCounts
	for _, r := range rs {
		r.mu.Lock()
		w.hist.Merge(r.total)
		w.calls += r.calls
		w.ops += r.ops
		w.errors += r.errors
		w.failed += r.failed
		for c, n := range r.byCode {
			byCode[c] += n
		}
		outcomes.addAll(&r.outcomes)
		r.mu.Unlock()
	}
	return w, byCode, outcomes.byName()
}

func latencyOf(h *hdrhistogram.Histogram) Latency {
	if h.TotalCount() == 0 {
		return Latency{}
	}
	return Latency{
		P50:  h.ValueAtQuantile(50),
		P90:  h.ValueAtQuantile(90),
		P99:  h.ValueAtQuantile(99),
		P999: h.ValueAtQuantile(99.9),
		Max:  h.Max(),
		Mean: h.Mean(),
	}
}
