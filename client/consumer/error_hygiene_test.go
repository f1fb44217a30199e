package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/idemhq/idem/client"
	"github.com/idemhq/idem/client/consumer"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server/observe"
)

// faulty fails the chosen calls on their way to idem.
type faulty struct {
	*env
	reserveErr, releaseErr, extendErr error
}

func (f *faulty) Reserve(ctx context.Context, req *idemv1.ReserveRequest) (*idemv1.ReserveResponse, error) {
	if f.reserveErr != nil {
		return nil, f.reserveErr
	}
	return f.env.Reserve(ctx, req)
}

func (f *faulty) Release(ctx context.Context, req *idemv1.ReleaseRequest) (*idemv1.ReleaseResponse, error) {
	if f.releaseErr != nil {
		return nil, f.releaseErr
	}
	return f.env.Release(ctx, req)
}

func (f *faulty) ExtendLease(ctx context.Context, req *idemv1.ExtendLeaseRequest) (*idemv1.ExtendLeaseResponse, error) {
	if f.extendErr != nil {
		return nil, f.extendErr
	}
	return f.env.ExtendLease(ctx, req)
}

// TestErrorsNameKeysByHash: a Result's error is what callers log (the
// kafka and natsjs observers, a JetStream termination reason), so it names
// the message by namespace and idemd's key_hash, never by its id, which
// may carry personal data.
func TestErrorsNameKeysByHash(t *testing.T) {
	const id = "order-4711/alice@example.com"
	unavailable := fmt.Errorf("%w: injected", client.ErrUnavailable)
	errDown := errors.New("downstream unavailable")
	ok := func(context.Context) error { return nil }
	tests := []struct {
		name string
		key  string // default id
		run  func(ctx context.Context, t *testing.T) consumer.Result
	}{
		{"reserve fails", "", func(ctx context.Context, t *testing.T) consumer.Result {
			r, _ := consumer.New(&faulty{env: newEnv(t), reserveErr: unavailable}).Handle(ctx, ns, id, nil, ok)
			return r
		}},
		{"mismatch", "", func(ctx context.Context, t *testing.T) consumer.Result {
			c := consumer.New(newEnv(t))
			c.Handle(ctx, ns, id, []byte("a"), ok)
			r, _ := c.Handle(ctx, ns, id, []byte("b"), ok)
			return r
		}},
		{"complete fails", "", func(ctx context.Context, t *testing.T) consumer.Result {
			e := newEnv(t)
			e.drop(id)
			r, _ := consumer.New(e).Handle(ctx, ns, id, nil, ok)
			return r
		}},
		{"released", "", func(ctx context.Context, t *testing.T) consumer.Result {
			r, _ := consumer.New(newEnv(t)).Handle(ctx, ns, id, nil, func(context.Context) error { return errDown })
			return r
		}},
		{"release fails", "", func(ctx context.Context, t *testing.T) consumer.Result {
			r, _ := consumer.New(&faulty{env: newEnv(t), releaseErr: unavailable}).Handle(ctx, ns, id, nil, func(context.Context) error { return errDown })
			return r
		}},
		{"lease lost", "", func(ctx context.Context, t *testing.T) consumer.Result {
			hb := clockwork.NewFakeClock()
			c := consumer.New(&faulty{env: newEnv(t), extendErr: client.ErrLeaseLost}, consumer.WithLease(10*time.Second), consumer.WithClock(hb))
			running := make(chan struct{})
			done := make(chan consumer.Result, 1)
			go func() {
				r, _ := c.Handle(ctx, ns, id, nil, func(ctx context.Context) error {
					close(running)
					<-ctx.Done()
					return context.Cause(ctx)
				})
				done <- r
			}()
			<-running
			if err := hb.BlockUntilContext(ctx, 1); err != nil {
				t.Fatal(err)
			}
			hb.Advance(5 * time.Second)
			return <-done
		}},
		{"batch mismatch", "", func(ctx context.Context, t *testing.T) consumer.Result {
			rs, _ := consumer.New(newEnv(t)).HandleBatch(ctx, ns, []consumer.Message{{ID: id, Fingerprint: []byte("a")}, {ID: id, Fingerprint: []byte("b")}},
				func(_ context.Context, b []consumer.Message) []error { return make([]error, len(b)) })
			return rs[1]
		}},
	}
	// An id over idem's 256-byte key limit fails alone in its batch.
	long := strings.Repeat(id, 10)
	tests = append(tests, struct {
		name string
		key  string
		run  func(ctx context.Context, t *testing.T) consumer.Result
	}{"batch item refused", long, func(ctx context.Context, t *testing.T) consumer.Result {
		rs, _ := consumer.New(newEnv(t)).HandleBatch(ctx, ns, []consumer.Message{{ID: long}},
			func(_ context.Context, b []consumer.Message) []error { return make([]error, len(b)) })
		return rs[0]
	}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
			defer cancel()
			r := tt.run(ctx, t)
			if r.Err == nil {
				t.Fatalf("Result = %v with no error, want one", r.Outcome)
			}
			key := tt.key
			if key == "" {
				key = id
			}
			msg := r.Err.Error()
			if strings.Contains(msg, "alice@example.com") {
				t.Errorf("error names the message id: %q", msg)
			}
			if !strings.Contains(msg, observe.HashKey(key)) || !strings.Contains(msg, ns) {
				t.Errorf("error %q does not name namespace %s and key_hash %s", msg, ns, observe.HashKey(key))
			}
		})
	}
}
