package loadgen

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
)

// Op names what one operation of the idem phase does.
type Op string

const (
	// OpReserve is a Reserve alone (a reserved new key stays IN_PROGRESS).
	OpReserve Op = "reserve"
	// OpReserveComplete is a Reserve followed, when it answers RESERVED, by
	// a Complete with a result of Payload bytes: the life of a command.
	OpReserveComplete Op = "reserve-complete"
)

// Mix is the share, in percent, of each kind of key in the idem phase.
type Mix struct {
	// New keys never seen before: the answer is RESERVED.
	New int `json:"new"`
	// Completed: keys completed before the run: the answer is COMPLETED.
	Completed int `json:"completed"`
	// InFlight: keys reserved before the run and never completed: the
	// answer is IN_PROGRESS.
	InFlight int `json:"inflight"`
}

// ParseMix reads "new=80,completed=15,inflight=5"; missing kinds are 0 and
// the shares must add up to 100.
func ParseMix(s string) (Mix, error) {
	var m Mix
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, val, ok := strings.Cut(part, "=")
		if !ok {
			return Mix{}, fmt.Errorf("idem: mix entry %q is not KIND=PERCENT", part)
		}
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(val), "%"))
		if err != nil || n < 0 || n > 100 {
			return Mix{}, fmt.Errorf("idem: mix entry %q needs a percentage from 0 to 100", part)
		}
		switch strings.TrimSpace(name) {
		case "new":
			m.New = n
		case "completed":
			m.Completed = n
		case "inflight", "in-flight", "in_progress":
			m.InFlight = n
		default:
			return Mix{}, fmt.Errorf("idem: mix kind %q is unknown (want new, completed, inflight)", name)
		}
	}
	if m.New+m.Completed+m.InFlight != 100 {
		return Mix{}, fmt.Errorf("idem: mix %q adds up to %d%%, want 100%%", s, m.New+m.Completed+m.InFlight)
	}
	return m, nil
}

func (m Mix) String() string {
	return fmt.Sprintf("new=%d,completed=%d,inflight=%d", m.New, m.Completed, m.InFlight)
}

// Config is one bench invocation.
type Config struct {
	// Conns are the connections calls go round-robin over (at least one).
	Conns []grpc.ClientConnInterface
	// Target is only reported.
	Target string

	Op          Op
	Mix         Mix
	Batch       int // items per BatchReserve/BatchComplete; 0 or 1: single calls
	Concurrency int
	// Duration bounds each phase unless Count is set.
	Duration time.Duration
	// Count is the number of calls of each phase (a batch call is one call
	// of Batch operations).
	Count    int64
	Keyspace int // size of each of the completed and in-flight key pools
	Payload  int // bytes of the completed result's body
	// Rate, when > 0, is the open-loop schedule in calls per second over
	// all workers; latency is measured from each call's intended start, so
	// a stalled server is not hidden by callers that stop calling
	// (coordinated omission).
	Rate      float64
	Namespace string
	Tenant    string
	Timeout   time.Duration // per call

	// Floor runs the same load against grpc.health.v1.Health/Check first.
	Floor bool
	// Rounds, with Floor, alternates floor and idem phases this many times
	// and reports the medians of the rounds' ratios, so a shared machine's
	// drift hits both sides alike (0 or 1: one round).
	Rounds int
	// ServerPID, when > 0, is the server whose CPU time is read around each phase.
	ServerPID int
	// ProcRoot is where /proc is (tests); empty means /proc.
	ProcRoot string

	// Progress, when non-nil, receives a line every ProgressInterval.
	Progress         io.Writer
	ProgressInterval time.Duration
	// Interval is the width of a timeline bucket (default 1s).
	Interval time.Duration
}

// Validate reports every contradiction in c.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Conns) == 0 {
		errs = append(errs, errors.New("idem: bench needs at least one connection"))
	}
	if c.Op != OpReserve && c.Op != OpReserveComplete {
		errs = append(errs, fmt.Errorf("idem: op %q is unknown (want reserve or reserve-complete)", c.Op))
	}
	if c.Mix.New+c.Mix.Completed+c.Mix.InFlight != 100 || c.Mix.New < 0 || c.Mix.Completed < 0 || c.Mix.InFlight < 0 {
		errs = append(errs, fmt.Errorf("idem: mix %s does not add up to 100%%", c.Mix))
	}
	if c.Batch < 0 || c.Batch > 1000 {
		errs = append(errs, fmt.Errorf("idem: batch %d is outside 0–1000", c.Batch))
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("idem: concurrency %d must be at least 1", c.Concurrency))
	}
	if c.Count < 0 {
		errs = append(errs, fmt.Errorf("idem: count %d is negative", c.Count))
	}
	if c.Count == 0 && c.Duration <= 0 {
		errs = append(errs, errors.New("idem: bench needs a positive duration or count"))
	}
	if (c.Mix.Completed > 0 || c.Mix.InFlight > 0) && c.Keyspace < max(1, c.Batch) {
		errs = append(errs, fmt.Errorf("idem: keyspace %d must be at least 1 and at least the batch size %d when the mix reuses keys", c.Keyspace, c.Batch))
	}
	if c.Payload < 0 {
		errs = append(errs, fmt.Errorf("idem: payload %d is negative", c.Payload))
	}
	if c.Rate < 0 {
		errs = append(errs, fmt.Errorf("idem: rate %v is negative", c.Rate))
	}
	if c.Namespace == "" {
		errs = append(errs, errors.New("idem: bench needs a namespace"))
	}
	if c.Rounds < 0 || c.Rounds > 100 {
		errs = append(errs, fmt.Errorf("idem: rounds %d is outside 1–100", c.Rounds))
	}
	if c.Rounds > 1 && !c.Floor {
		errs = append(errs, fmt.Errorf("idem: %d rounds alternate the floor and idem phases: they need the floor", c.Rounds))
	}
	if c.ServerPID < 0 {
		errs = append(errs, fmt.Errorf("idem: server pid %d is negative", c.ServerPID))
	}
	return errors.Join(errs...)
}

func (c *Config) batchSize() int { return max(1, c.Batch) }

func (c *Config) interval() time.Duration {
	if c.Interval > 0 {
		return c.Interval
	}
	return time.Second
}
