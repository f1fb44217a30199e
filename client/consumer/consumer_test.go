package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/idemhq/idem"
	"github.com/idemhq/idem/client"
	"github.com/idemhq/idem/client/consumer"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

const ns = "orders-projector"

type delivery struct {
	fp      string
	fnErr   error
	want    consumer.Outcome
	wantRan bool
	wantAck bool
	wantErr error
}

func TestHandle(t *testing.T) {
	errDown := errors.New("downstream unavailable")
	errBad := errors.New("order refers to no customer")
	tests := []struct {
		name       string
		opts       []consumer.Option
		deliveries []delivery
	}{
		{
			name: "redelivery of a processed message is a duplicate",
			deliveries: []delivery{
				{want: consumer.Processed, wantRan: true, wantAck: true},
				{want: consumer.Duplicate, wantAck: true},
				{want: consumer.Duplicate, wantAck: true},
			},
		},
		{
			name: "transient failure is released and retried",
			deliveries: []delivery{
				{fnErr: errDown, want: consumer.Released, wantRan: true, wantErr: errDown},
				{want: consumer.Processed, wantRan: true, wantAck: true},
				{want: consumer.Duplicate, wantAck: true},
			},
		},
		{
			name: "permanent failure is recorded and not retried",
			deliveries: []delivery{
				{fnErr: consumer.Permanent(errBad), want: consumer.Failed, wantRan: true, wantAck: true},
				{want: consumer.Duplicate, wantAck: true},
			},
		},
		{
			name: "classifier marks failures permanent",
			opts: []consumer.Option{consumer.WithPermanentErrors(func(err error) bool { return errors.Is(err, errBad) })},
			deliveries: []delivery{
				{fnErr: errBad, want: consumer.Failed, wantRan: true, wantAck: true},
				{want: consumer.Duplicate, wantAck: true},
			},
		},
		{
			name: "same id with another payload is a mismatch",
			deliveries: []delivery{
				{fp: "a", want: consumer.Processed, wantRan: true, wantAck: true},
				{fp: "b", want: consumer.Mismatch, wantErr: consumer.ErrMismatch},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
			defer cancel()
			e := newEnv(t)
			c := consumer.New(e, tt.opts...)
			var wantTokens uint64
			for i, d := range tt.deliveries {
				ran := false
				res, err := c.Handle(ctx, ns, "order-1", []byte(d.fp), func(ctx context.Context) error {
					ran = true
					tok, ok := client.TokenFromContext(ctx)
					if !ok || tok == 0 {
						t.Errorf("delivery %d: TokenFromContext() = %d, %v; want a token", i, tok, ok)
					}
					return d.fnErr
				})
				if ran {
					wantTokens++
					if res.Token != wantTokens {
						t.Errorf("delivery %d: token = %d, want %d (tokens grow per attempt)", i, res.Token, wantTokens)
					}
				}
				if res.Outcome != d.want || ran != d.wantRan || res.Ack() != d.wantAck || (err == nil) != d.wantAck {
					t.Errorf("delivery %d: Handle() = %v (ran %v, ack %v, err %v); want %v (ran %v, ack %v)", i, res.Outcome, ran, res.Ack(), err, d.want, d.wantRan, d.wantAck)
				}
				if d.wantErr != nil && !errors.Is(err, d.wantErr) {
					t.Errorf("delivery %d: Handle() error = %v, want %v", i, err, d.wantErr)
				}
			}
		})
	}
}

func TestHandleStats(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	e := newEnv(t)
	c := consumer.New(e)
	ok := func(context.Context) error { return nil }
	for _, id := range []string{"a", "b", "a", "c", "b", "a"} {
		if _, err := c.Handle(ctx, ns, id, nil, ok); err != nil {
			t.Fatalf("Handle(%s) = %v", id, err)
		}
	}
	c.Handle(ctx, ns, "d", nil, func(context.Context) error { return errors.New("flaky") })
	c.Handle(ctx, ns, "a", []byte("other"), ok)
	s := c.Stats()
	for _, tt := range []struct {
		name      string
		got, want int64
	}{
		{"processed", s.Processed.Load(), 3},
		{"duplicates", s.Duplicates.Load(), 3},
		{"released", s.Released.Load(), 1},
		{"mismatches", s.Mismatches.Load(), 1},
		{"errors", s.Errors.Load(), 0},
	} {
		if tt.got != tt.want {
			t.Errorf("Stats().%s = %d, want %d", tt.name, tt.got, tt.want)
		}
	}
}

func TestHandleNamespaces(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	e := newEnv(t)
	c := consumer.New(e, consumer.WithNamespace("group-a"))
	ok := func(context.Context) error { return nil }
	for _, tt := range []struct {
		ns   string
		want consumer.Outcome
	}{
		{"", consumer.Processed},        // group-a
		{"group-a", consumer.Duplicate}, // same group
		{"group-b", consumer.Processed}, // another group sees every message too
	} {
		res, _ := c.Handle(ctx, tt.ns, "m-1", nil, ok)
		if res.Outcome != tt.want {
			t.Errorf("Handle(ns %q) = %v, want %v", tt.ns, res.Outcome, tt.want)
		}
	}
	if _, err := consumer.New(e).Handle(ctx, "", "m-1", nil, ok); err == nil {
		t.Error("Handle() without any namespace = nil error, want an error")
	}
}

// holdLease reserves key as another consumer would, and leaves it running.
func holdLease(ctx context.Context, t *testing.T, svc client.Service, key string, lease time.Duration) uint64 {
	t.Helper()
	resp, err := svc.Reserve(ctx, &idemv1.ReserveRequest{Namespace: ns, Key: key, LeaseTtl: durationpb.New(lease)})
	if err != nil || resp.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
		t.Fatalf("Reserve() = %v, %v; want RESERVED", resp.GetOutcome(), err)
	}
	return resp.GetRecord().GetToken()
}

func TestHandleInFlight(t *testing.T) {
	tests := []struct {
		name      string
		policy    consumer.InFlightPolicy
		wantAck   bool
		wantAfter time.Duration
	}{
		{"nack for later", consumer.NackForLater, false, 20 * time.Second},
		{"skip and ack", consumer.SkipAndAck, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
			defer cancel()
			e := newEnv(t)
			holdLease(ctx, t, e, "m-1", 20*time.Second)
			// The consumer reads the lease end with the store's clock.
			c := consumer.New(e, consumer.WithInFlightPolicy(tt.policy), consumer.WithClock(e.storeClock))
			res, err := c.Handle(ctx, ns, "m-1", nil, func(context.Context) error {
				t.Error("handler ran for a message another attempt holds")
				return nil
			})
			if res.Outcome != consumer.InFlight || res.Ack() != tt.wantAck || res.RetryAfter != tt.wantAfter {
				t.Errorf("Handle() = %v (ack %v, retry after %v); want in-flight (ack %v, retry after %v)", res.Outcome, res.Ack(), res.RetryAfter, tt.wantAck, tt.wantAfter)
			}
			if !tt.wantAck && !errors.Is(err, consumer.ErrInFlight) {
				t.Errorf("Handle() error = %v, want ErrInFlight", err)
			}
			if got := c.Stats().InFlight.Load(); got != 1 {
				t.Errorf("Stats().InFlight = %d, want 1", got)
			}
		})
	}
}

// TestHeartbeat runs a handler longer than its lease: with heartbeats a
// competing delivery still finds it in flight; without, it takes over.
func TestHeartbeat(t *testing.T) {
	const lease = 10 * time.Second
	tests := []struct {
		name string
		opts []consumer.Option
		want idemv1.ReserveOutcome
	}{
		{"heartbeat keeps the lease", nil, idemv1.ReserveOutcome_RESERVE_OUTCOME_IN_PROGRESS},
		{"without heartbeat the lease ends", []consumer.Option{consumer.WithoutHeartbeat()}, idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
			defer cancel()
			e := newEnv(t)
			hb := clockwork.NewFakeClock()
			c := consumer.New(e, append([]consumer.Option{consumer.WithLease(lease), consumer.WithClock(hb)}, tt.opts...)...)
			running, finish := make(chan struct{}), make(chan struct{})
			done := make(chan error, 1)
			go func() {
				_, err := c.Handle(ctx, ns, "m-1", nil, func(ctx context.Context) error {
					close(running)
					<-finish
					return nil
				})
				done <- err
			}()
			<-running
			if tt.opts == nil {
				if err := hb.BlockUntilContext(ctx, 1); err != nil {
					t.Fatal(err)
				}
				e.storeClock.Advance(lease / 2)
				hb.Advance(lease / 2)
				select {
				case <-e.extended:
				case <-ctx.Done():
					t.Fatal("no ExtendLease after half the lease")
				}
				e.storeClock.Advance(lease/2 + time.Second)
			} else {
				e.storeClock.Advance(lease + time.Second)
			}
			resp, err := e.Reserve(ctx, &idemv1.ReserveRequest{Namespace: ns, Key: "m-1"})
			if err != nil || resp.GetOutcome() != tt.want {
				t.Errorf("competing Reserve() = %v, %v; want %v", resp.GetOutcome(), err, tt.want)
			}
			close(finish)
			err = <-done
			if wantLost := tt.opts != nil; wantLost != errors.Is(err, idem.ErrLeaseLost) {
				t.Errorf("Handle() error = %v, want lease lost %v", err, wantLost)
			}
		})
	}
}

// TestLeaseLostCancelsHandler: once another attempt took the message over,
// the heartbeat learns it and cancels the handler's context.
func TestLeaseLostCancelsHandler(t *testing.T) {
	const lease = 10 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	e := newEnv(t)
	hb := clockwork.NewFakeClock()
	c := consumer.New(e, consumer.WithLease(lease), consumer.WithClock(hb))
	running := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := c.Handle(ctx, ns, "m-1", nil, func(ctx context.Context) error {
			close(running)
			<-ctx.Done()
			return context.Cause(ctx)
		})
		done <- err
	}()
	<-running
	if err := hb.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	e.storeClock.Advance(lease + time.Second)
	holdLease(ctx, t, e, "m-1", lease) // the takeover
	hb.Advance(lease / 2)
	if err := <-done; !errors.Is(err, idem.ErrLeaseLost) {
		t.Errorf("Handle() error = %v, want ErrLeaseLost", err)
	}
}

// TestCrashBeforeComplete is the window idem alone does not close: the
// side effect happened, Complete never arrived. After the lease the
// redelivery runs the handler again with a larger token, which a fenced
// downstream uses to refuse the first attempt's late writes.
func TestCrashBeforeComplete(t *testing.T) {
	const lease = 10 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	e := newEnv(t)
	c := consumer.New(e, consumer.WithLease(lease), consumer.WithoutHeartbeat(), consumer.WithClock(e.storeClock))
	fenced := newFencedTable()
	effect := func(ctx context.Context) error {
		tok, _ := client.TokenFromContext(ctx)
		return fenced.write("m-1", tok)
	}
	e.drop("m-1")
	if res, err := c.Handle(ctx, ns, "m-1", nil, effect); err == nil || res.Outcome != consumer.Errored {
		t.Fatalf("Handle() with Complete lost = %v, %v; want errored", res.Outcome, err)
	}
	e.undrop("m-1")
	if res, err := c.Handle(ctx, ns, "m-1", nil, effect); !errors.Is(err, consumer.ErrInFlight) {
		t.Fatalf("redelivery within the lease = %v, %v; want ErrInFlight", res.Outcome, err)
	}
	e.storeClock.Advance(lease + time.Second)
	if res, err := c.Handle(ctx, ns, "m-1", nil, effect); err != nil || res.Outcome != consumer.Processed || res.Token != 2 {
		t.Fatalf("redelivery after the lease = %v (token %d), %v; want processed with token 2", res.Outcome, res.Token, err)
	}
	if err := fenced.write("m-1", 1); err == nil {
		t.Error("late write of the first attempt (token 1) accepted, want refused")
	}
	if got := fenced.rows(); got != 1 {
		t.Errorf("fenced rows = %d, want 1", got)
	}
}

func TestBatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	e := newEnv(t)
	c := consumer.New(e, consumer.WithClock(e.storeClock))
	// m-0 and m-1 were processed before; m-2 is held by another attempt.
	for _, id := range []string{"m-0", "m-1"} {
		if _, err := c.Handle(ctx, ns, id, nil, func(context.Context) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	holdLease(ctx, t, e, "m-2", time.Minute)
	e.reserves.Store(0)
	e.completes.Store(0)
	var msgs []consumer.Message
	for i := range 10 {
		msgs = append(msgs, consumer.Message{ID: fmt.Sprintf("m-%d", i), Value: i})
	}
	msgs = append(msgs, consumer.Message{ID: "m-5", Value: 5}) // repeated inside the batch
	errDown := errors.New("downstream unavailable")
	var seen []string
	results, err := c.HandleBatch(ctx, ns, msgs, func(ctx context.Context, batch []consumer.Message) []error {
		errs := make([]error, len(batch))
		for i, m := range batch {
			seen = append(seen, m.ID)
			if m.Token == 0 {
				t.Errorf("message %s reached the handler without a token", m.ID)
			}
			switch m.ID {
			case "m-3":
				errs[i] = errDown
			case "m-4":
				errs[i] = consumer.Permanent(errors.New("bad order"))
			}
		}
		return errs
	})
	if err != nil {
		t.Fatalf("HandleBatch() error = %v", err)
	}
	if got, want := fmt.Sprint(seen), "[m-3 m-4 m-5 m-6 m-7 m-8 m-9]"; got != want {
		t.Errorf("handler saw %s, want %s", got, want)
	}
	want := []consumer.Outcome{
		consumer.Duplicate, consumer.Duplicate, consumer.InFlight, consumer.Released, consumer.Failed,
		consumer.Processed, consumer.Processed, consumer.Processed, consumer.Processed, consumer.Processed,
		consumer.Duplicate,
	}
	for i, r := range results {
		if r.Outcome != want[i] {
			t.Errorf("result %d (%s) = %v, want %v", i, msgs[i].ID, r.Outcome, want[i])
		}
		wantAck := want[i] != consumer.InFlight && want[i] != consumer.Released
		if r.Ack() != wantAck {
			t.Errorf("result %d (%s) ack = %v, want %v (err %v)", i, msgs[i].ID, r.Ack(), wantAck, r.Err)
		}
	}
	if !errors.Is(results[3].Err, errDown) {
		t.Errorf("released result error = %v, want %v", results[3].Err, errDown)
	}
	for _, rt := range []struct {
		name      string
		got, want int64
	}{
		{"BatchReserve", e.batchReserves.Load(), 1},
		{"BatchComplete", e.batchCompletes.Load(), 1},
		{"Reserve", e.reserves.Load(), 0},
		{"Complete", e.completes.Load(), 0},
		{"Release", e.releases.Load(), 1},
	} {
		if rt.got != rt.want {
			t.Errorf("%s calls = %d, want %d", rt.name, rt.got, rt.want)
		}
	}
	// The whole batch again: everything done is a duplicate; m-3 runs again.
	e.storeClock.Advance(2 * time.Minute) // m-2's holder died
	seen = nil
	results, err = c.HandleEach(ctx, ns, msgs, func(ctx context.Context, m consumer.Message) error {
		if tok, _ := client.TokenFromContext(ctx); tok != m.Token {
			t.Errorf("TokenFromContext() = %d, want %d", tok, m.Token)
		}
		seen = append(seen, m.ID)
		return nil
	})
	if err != nil {
		t.Fatalf("HandleEach() error = %v", err)
	}
	if got, want := fmt.Sprint(seen), "[m-2 m-3]"; got != want {
		t.Errorf("replay: handler saw %s, want %s", got, want)
	}
	for i, r := range results {
		if !r.Ack() {
			t.Errorf("replay result %d (%s) = %v, %v; want acked", i, msgs[i].ID, r.Outcome, r.Err)
		}
	}
}

func TestBatchSplitsAtMaxBatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	e := newEnv(t)
	c := consumer.New(e)
	msgs := make([]consumer.Message, consumer.MaxBatch+1)
	for i := range msgs {
		msgs[i].ID = fmt.Sprintf("m-%d", i)
	}
	n := 0
	results, err := c.HandleEach(ctx, ns, msgs, func(context.Context, consumer.Message) error { n++; return nil })
	if err != nil || n != len(msgs) || len(results) != len(msgs) {
		t.Fatalf("HandleEach() = %d results, %v; handler ran %d times; want %d, nil, %d", len(results), err, n, len(msgs), len(msgs))
	}
	if got := e.batchReserves.Load(); got != 2 {
		t.Errorf("BatchReserve calls = %d, want 2", got)
	}
}

// TestPanicReleases: a handler that panics does not keep the message until
// its lease ends; the next delivery runs it at once.
func TestPanicReleases(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	e := newEnv(t)
	c := consumer.New(e)
	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Errorf("recover() = %v, want the handler's panic", p)
			}
		}()
		c.Handle(ctx, ns, "m-1", nil, func(context.Context) error { panic("boom") })
	}()
	res, err := c.Handle(ctx, ns, "m-1", nil, func(context.Context) error { return nil })
	if err != nil || res.Outcome != consumer.Processed || res.Token != 2 {
		t.Errorf("delivery after the panic = %v (token %d), %v; want processed with token 2", res.Outcome, res.Token, err)
	}
	if got := c.Stats().Released.Load(); got != 1 {
		t.Errorf("Stats().Released = %d, want 1", got)
	}
}
