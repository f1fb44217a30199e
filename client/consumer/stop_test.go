package consumer_test

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/idemhq/idem/client/consumer"
)

// TestHandleEachStopReleasesUnstarted: the batch's context ends while its
// first message runs (a shutdown). The second message must be released,
// not handed to fn: a handler answers a stopped context with ctx.Err(),
// which a classifier that deems unknown errors final would record as the
// message's result, and the redelivery would skip a message never run.
func TestHandleEachStopReleasesUnstarted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	e := newEnv(t)
	c := consumer.New(e, consumer.WithPermanentErrors(func(error) bool { return true }))
	msgs := []consumer.Message{{ID: "m-1"}, {ID: "m-2"}}
	bctx, stop := context.WithCancel(ctx)
	ran := map[string]int{}
	fn := func(ctx context.Context, m consumer.Message) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		ran[m.ID]++
		if m.ID == "m-1" {
			stop()
		}
		return nil
	}
	results, err := c.HandleEach(bctx, ns, msgs, fn)
	if err != nil {
		t.Fatal(err)
	}
	if results[0].Outcome != consumer.Processed {
		t.Errorf("m-1 outcome = %v, want processed", results[0].Outcome)
	}
	if results[1].Outcome != consumer.Released || results[1].Ack() {
		t.Errorf("m-2 outcome = %v (ack %v), want released, not acked", results[1].Outcome, results[1].Ack())
	}
	// The redelivery runs it.
	results, err = c.HandleEach(ctx, ns, msgs, fn)
	if err != nil {
		t.Fatal(err)
	}
	if results[1].Outcome != consumer.Processed || ran["m-2"] != 1 {
		t.Errorf("redelivered m-2 outcome = %v, handler runs %d; want processed, 1", results[1].Outcome, ran["m-2"])
	}
}

// TestStoppedHandlerIsNotFinal: the caller's context ends while the handler
// runs, and the handler returns what a stopped call gives: ctx's error, its
// cause, or a downstream gRPC call's CANCELED status (which wraps neither).
// A classifier that deems unknown errors final must not record that as the
// message's result: the work is unfinished, and the redelivery would skip
// it.
func TestStoppedHandlerIsNotFinal(t *testing.T) {
	for name, stopped := range map[string]func(ctx context.Context) error{
		"ctx.Err":       func(ctx context.Context) error { return ctx.Err() },
		"cause":         func(ctx context.Context) error { return context.Cause(ctx) },
		"grpc CANCELED": func(context.Context) error { return status.Error(codes.Canceled, "context canceled") },
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
			defer cancel()
			e := newEnv(t)
			c := consumer.New(e, consumer.WithPermanentErrors(func(error) bool { return true }))
			hctx, stop := context.WithCancelCause(ctx)
			r, _ := c.Handle(hctx, ns, "m-1", nil, func(ctx context.Context) error {
				stop(errors.New("SIGTERM")) // e.g. a shutdown while the message is handled
				return stopped(ctx)
			})
			if r.Outcome != consumer.Released || r.Ack() {
				t.Errorf("Handle() outcome = %v (ack %v), want released, not acked", r.Outcome, r.Ack())
			}
			ran := false
			r, _ = c.Handle(ctx, ns, "m-1", nil, func(context.Context) error { ran = true; return nil })
			if r.Outcome != consumer.Processed || !ran {
				t.Errorf("redelivery outcome = %v, ran %v; want processed, true", r.Outcome, ran)
			}
		})
	}
}
