// Package logthrottle keeps a flood of one kind of log line readable. A
// store outage, or a client retrying a revoked token thousands of times a
// second, would otherwise write a line per call and bury everything else
// (and cost the log pipeline more than the calls). The first lines of each
// kind in a window are written; the rest are counted, and the next line of
// that kind written says how many were left out.
package logthrottle

import (
	"sync"
	"time"
)

// Defaults for idemd's per-call warnings: up to 5 lines of a kind a second.
const (
	DefaultBurst  = 5
	DefaultWindow = time.Second
)

// Throttle decides per kind of line. Kinds must come from a fixed set (a
// log message, never a caller's input): each one is remembered.
type Throttle struct {
	burst  int
	window time.Duration
	now    func() time.Time

	mu    sync.Mutex
	kinds map[string]*kind
}

type kind struct {
	start   time.Time
	written int
	left    int // lines left out since the last one written
}

// New lets through burst lines of each kind per window of the clock now
// (nil: the system clock).
func New(burst int, window time.Duration, now func() time.Time) *Throttle {
	if now == nil {
		now = time.Now
	}
	return &Throttle{burst: max(burst, 1), window: window, now: now, kinds: map[string]*kind{}}
}

// Allow reports whether a line of this kind may be written now and, if so,
// how many lines of the kind were left out before it.
func (t *Throttle) Allow(name string) (ok bool, leftOut int) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	k := t.kinds[name]
	if k == nil {
		k = &kind{start: now}
		t.kinds[name] = k
	}
	if now.Sub(k.start) >= t.window {
		k.start, k.written = now, 0
	}
	if k.written >= t.burst {
		k.left++
		return false, 0
	}
	k.written++
	leftOut, k.left = k.left, 0
	return true, leftOut
}
