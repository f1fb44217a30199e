package harness

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/idemhq/idem"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/reliability/model"
)

// Long is the lease and retention of every recorded call: longer than any
// run, so the model never has to guess whether a lease ran out.
const Long = time.Hour

// Recorder collects a history. Timestamps are nanoseconds since the
// recorder was made, from the monotonic clock.
type Recorder struct {
	start time.Time

	mu         sync.Mutex
	ops        []porcupine.Operation
	unexpected []string
	acked      map[string]string // key → result of an acknowledged Complete
	dropped    int
}

// NewRecorder returns an empty history.
func NewRecorder() *Recorder {
	return &Recorder{start: time.Now(), acked: map[string]string{}}
}

func (r *Recorder) now() int64 { return int64(time.Since(r.start)) }

// Operations returns a copy of the history so far.
func (r *Recorder) Operations() []porcupine.Operation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]porcupine.Operation(nil), r.ops...)
}

// Unexpected lists calls that failed with an error the contract does not
// allow for them (INTERNAL, a LEASE_LOST without reason, …).
func (r *Recorder) Unexpected() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.unexpected...)
}

// Dropped is the number of calls left out of the history: lookups without
// an answer and calls gRPC never sent.
func (r *Recorder) Dropped() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped
}

// Acknowledged maps each key to the result of a Complete the server
// acknowledged for it.
func (r *Recorder) Acknowledged() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]string, len(r.acked))
	for k, v := range r.acked {
		out[k] = v
	}
	return out
}

// Counts returns how many calls were recorded and how many of them have an
// unknown outcome; calls left out of the history (see Dropped) are not
// counted.
func (r *Recorder) Counts() (total, unknown int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, op := range r.ops {
		if op.Output.(model.Output).Unknown {
			unknown++
		}
	}
	return len(r.ops), unknown
}

func (r *Recorder) add(client int, call int64, in model.Input, out model.Output, err error) {
	if out.Unknown && (in.Kind == model.Lookup || notSent(err)) {
		// A read with no answer constrains nothing, and a call gRPC never
		// sent had no effect; leaving both out keeps the search small.
		// Leaving out a call can only make the check stricter.
		r.mu.Lock()
		r.dropped++
		r.mu.Unlock()
		return
	}
	ret := r.now()
	if out.Unknown {
		ret = model.UnknownReturn
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, porcupine.Operation{ClientId: client, Call: call, Return: ret, Input: in, Output: out, Metadata: errString(err)})
	if in.Kind == model.Complete && !out.Unknown && out.Err == model.OK {
		r.acked[in.Key] = out.Result
	}
}

// notSent reports whether gRPC failed a call before sending it: the
// channel had no connection ("connection error: …", the last dial's error)
// or none became ready before the deadline.
func notSent(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	switch st.Code() {
	case codes.Unavailable:
		return strings.HasPrefix(st.Message(), "connection error: ")
	case codes.DeadlineExceeded:
		return strings.HasSuffix(st.Message(), "while waiting for connections to become ready")
	}
	return false
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Dial connects to idemd at addr with reconnect backoff short enough for a
// restarted server to be found again within a few hundred milliseconds.
// opts come last and win.
func Dial(addr string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	bo := backoff.DefaultConfig
	bo.BaseDelay, bo.MaxDelay = 20*time.Millisecond, 200*time.Millisecond
	all := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bo, MinConnectTimeout: time.Second}),
	}, opts...)
	return grpc.NewClient(addr, all...)
}

// Client is one logical client: its calls are sequential and recorded.
type Client struct {
	ID        int
	Namespace string
	Timeout   time.Duration // per call
	RPC       idemv1.IdempotencyServiceClient
	Rec       *Recorder
}

func (c *Client) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, c.Timeout)
}

// skipped answers a call the caller's context ended before it was sent:
// not recorded, since it never reached the server.
func skipped(ctx context.Context) bool { return ctx.Err() != nil }

// Reserve records a Reserve of key with fingerprint fp.
func (c *Client) Reserve(ctx context.Context, key, fp string) model.Output {
	in := model.Input{Kind: model.Reserve, Key: key, Fingerprint: fp}
	if skipped(ctx) {
		return model.Output{Unknown: true}
	}
	call := c.Rec.now()
	cctx, cancel := c.ctx(ctx)
	resp, err := c.RPC.Reserve(cctx, &idemv1.ReserveRequest{
		Namespace: c.Namespace, Key: key, Fingerprint: []byte(fp),
		LeaseTtl: durationpb.New(Long), Retention: durationpb.New(Long),
	})
	cancel()
	var out model.Output
	if err != nil {
		out = c.classify(in, err, false)
	} else {
		out = recordOutput(resp.GetRecord())
		out.Outcome = outcome(resp.GetOutcome())
		if out.Outcome == model.Mismatch {
			out = model.Output{Outcome: model.Mismatch}
		}
	}
	c.Rec.add(c.ID, call, in, out, err)
	return out
}

// Complete records a Complete of key with token and the result result
// encodes (see EncodeResult).
func (c *Client) Complete(ctx context.Context, key string, token uint64, result *idemv1.Result) model.Output {
	in := model.Input{Kind: model.Complete, Key: key, Token: token, Result: DigestResult(result)}
	if skipped(ctx) {
		return model.Output{Unknown: true}
	}
	call := c.Rec.now()
	cctx, cancel := c.ctx(ctx)
	resp, err := c.RPC.Complete(cctx, &idemv1.CompleteRequest{
		Namespace: c.Namespace, Key: key, Token: token, Result: result, Retention: durationpb.New(Long),
	})
	cancel()
	out := recordOutput(resp.GetRecord())
	if err != nil {
		out = c.classify(in, err, true)
	}
	c.Rec.add(c.ID, call, in, out, err)
	return out
}

// Release records a Release of key with token.
func (c *Client) Release(ctx context.Context, key string, token uint64) model.Output {
	in := model.Input{Kind: model.Release, Key: key, Token: token}
	if skipped(ctx) {
		return model.Output{Unknown: true}
	}
	call := c.Rec.now()
	cctx, cancel := c.ctx(ctx)
	resp, err := c.RPC.Release(cctx, &idemv1.ReleaseRequest{Namespace: c.Namespace, Key: key, Token: token})
	cancel()
	out := recordOutput(resp.GetRecord())
	if err != nil {
		out = c.classify(in, err, true)
	}
	c.Rec.add(c.ID, call, in, out, err)
	return out
}

// Lookup records a Lookup of key.
func (c *Client) Lookup(ctx context.Context, key string) model.Output {
	in := model.Input{Kind: model.Lookup, Key: key}
	if skipped(ctx) {
		return model.Output{Unknown: true}
	}
	call := c.Rec.now()
	cctx, cancel := c.ctx(ctx)
	resp, err := c.RPC.Lookup(cctx, &idemv1.LookupRequest{Namespace: c.Namespace, Key: key})
	cancel()
	out := recordOutput(resp.GetRecord())
	if err != nil {
		out = c.classify(in, err, false)
	}
	c.Rec.add(c.ID, call, in, out, err)
	return out
}

// classify turns an error into an answer: NOT_FOUND and LEASE_LOST are
// answers; UNAVAILABLE, DEADLINE_EXCEEDED and CANCELED leave the outcome
// unknown; anything else is unknown too but noted as unexpected.
func (c *Client) classify(in model.Input, err error, leaseLostAllowed bool) model.Output {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return model.Output{Unknown: true}
	}
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return model.Output{Unknown: true}
	case codes.NotFound:
		if in.Kind != model.Reserve {
			return model.Output{Err: model.NotFound}
		}
	case codes.FailedPrecondition:
		if leaseLostAllowed && reason(st) == idem.ReasonLeaseLost {
			return model.Output{Err: model.LeaseLost}
		}
	}
	c.Rec.mu.Lock()
	c.Rec.unexpected = append(c.Rec.unexpected, fmt.Sprintf("client %d: %s(%s): %v", c.ID, in.Kind, in.Key, err))
	c.Rec.mu.Unlock()
	return model.Output{Unknown: true}
}

func reason(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

func outcome(o idemv1.ReserveOutcome) model.Outcome {
	switch o {
	case idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED:
		return model.Reserved
	case idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED:
		return model.OutcomeCompleted
	case idemv1.ReserveOutcome_RESERVE_OUTCOME_IN_PROGRESS:
		return model.OutcomeInProgress
	case idemv1.ReserveOutcome_RESERVE_OUTCOME_MISMATCH:
		return model.Mismatch
	}
	return 0
}

func recordOutput(r *idemv1.Record) model.Output {
	if r == nil {
		return model.Output{}
	}
	out := model.Output{Token: r.GetToken()}
	switch r.GetState() {
	case idemv1.RecordState_RECORD_STATE_IN_PROGRESS:
		out.State = model.InProgress
	case idemv1.RecordState_RECORD_STATE_COMPLETED:
		out.State = model.Completed
		out.Result = DigestResult(r.GetResult())
	case idemv1.RecordState_RECORD_STATE_RELEASED:
		out.State = model.Released
	}
	return out
}

// DigestResult is the model's name for a stored result: every field the
// workload sets, so a result that changes in any byte is another result.
func DigestResult(r *idemv1.Result) string {
	return fmt.Sprintf("%d|%q|%x", r.GetCode(), r.GetMessage(), r.GetBody())
}

// Summary counts the answers by call and outcome, e.g. to show that a
// workload had contention ("Reserve IN_PROGRESS: 41").
func (r *Recorder) Summary() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for _, op := range r.ops {
		in, o := op.Input.(model.Input), op.Output.(model.Output)
		var what string
		switch {
		case o.Unknown:
			what = "unknown"
		case in.Kind == model.Reserve:
			what = o.Outcome.String()
		case o.Err != model.OK:
			what = o.Err.String()
		default:
			what = o.State.String()
		}
		out[in.Kind.String()+" "+what]++
	}
	return out
}

// DuplicateHolders lists every token that more than one RESERVED answer
// handed out for the same key: two holders of one key at once.
func (r *Recorder) DuplicateHolders() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	type holder struct {
		key   string
		token uint64
	}
	seen := map[holder]int{}
	for _, op := range r.ops {
		in, o := op.Input.(model.Input), op.Output.(model.Output)
		if in.Kind == model.Reserve && !o.Unknown && o.Outcome == model.Reserved {
			seen[holder{in.Key, o.Token}]++
		}
	}
	var out []string
	for h, n := range seen {
		if n > 1 {
			out = append(out, fmt.Sprintf("key %s: token %d handed out %d times", h.key, h.token, n))
		}
	}
	return out
}
