package loadgen

import (
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
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
	iCalls   int64
	iOps     int64
	iErrors  int64
	byCode   map[string]int64
	outcomes map[string]int64
}

func newRecorder() *recorder {
	return &recorder{total: newHist(), interval: newHist(), byCode: map[string]int64{}, outcomes: map[string]int64{}}
}

// tally is what one call adds.
type tally struct {
	ops      int
	errs     map[string]int64 // by code name
	outcomes map[string]int64
}

func (t *tally) addErr(code string, n int64) {
	if t.errs == nil {
		t.errs = map[string]int64{}
	}
	t.errs[code] += n
}

func (t *tally) addOutcome(o string) {
	if t.outcomes == nil {
		t.outcomes = map[string]int64{}
	}
	t.outcomes[o]++
}

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
	for c, n := range t.errs {
		r.byCode[c] += n
		r.errors += n
		r.iErrors += n
	}
	for o, n := range t.outcomes {
		r.outcomes[o] += n
	}
}

// window is the drained interval of all workers, or their totals.
type window struct {
	hist   *hdrhistogram.Histogram
	calls  int64
	ops    int64
	errors int64
}

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
	byCode, outcomes := map[string]int64{}, map[string]int64{}
	for _, r := range rs {
		r.mu.Lock()
		w.hist.Merge(r.total)
		w.calls += r.calls
		w.ops += r.ops
		w.errors += r.errors
		for c, n := range r.byCode {
			byCode[c] += n
		}
		for o, n := range r.outcomes {
			outcomes[o] += n
		}
		r.mu.Unlock()
	}
	return w, byCode, outcomes
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
