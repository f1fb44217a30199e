package consumer_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/idemhq/idem/client/consumer"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// TestBatchRepeatAfterMismatch: when an ID's first occurrence in a batch is
// a MISMATCH, the record holds another payload, which may be the repeat's
// own: the repeat gets what idem says of it, not a Mismatch that adapters
// terminate (a JetStream redelivery of a message still in flight elsewhere
// would then be lost if that holder fails).
func TestBatchRepeatAfterMismatch(t *testing.T) {
	ok := func(context.Context, consumer.Message) error { return nil }
	tests := []struct {
		name    string
		setup   func(ctx context.Context, t *testing.T, e *env, c *consumer.Consumer)
		want    consumer.Outcome
		wantAck bool
	}{
		{
			name: "record completed with the repeat's payload",
			setup: func(ctx context.Context, t *testing.T, e *env, c *consumer.Consumer) {
				if _, err := c.Handle(ctx, ns, "m-1", []byte("A"), func(context.Context) error { return nil }); err != nil {
					t.Fatal(err)
				}
			},
			want: consumer.Duplicate, wantAck: true,
		},
		{
			name: "record held with the repeat's payload",
			setup: func(ctx context.Context, t *testing.T, e *env, c *consumer.Consumer) {
				resp, err := e.Reserve(ctx, &idemv1.ReserveRequest{Namespace: ns, Key: "m-1", Fingerprint: []byte("A"), LeaseTtl: durationpb.New(time.Minute)})
				if err != nil || resp.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
					t.Fatalf("Reserve() = %v, %v", resp.GetOutcome(), err)
				}
			},
			want: consumer.InFlight, wantAck: false,
		},
		{
			name: "record with a third payload",
			setup: func(ctx context.Context, t *testing.T, e *env, c *consumer.Consumer) {
				if _, err := c.Handle(ctx, ns, "m-1", []byte("C"), func(context.Context) error { return nil }); err != nil {
					t.Fatal(err)
				}
			},
			want: consumer.Mismatch, wantAck: false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
			defer cancel()
			e := newEnv(t)
			c := consumer.New(e, consumer.WithClock(e.storeClock))
			tt.setup(ctx, t, e, c)
			msgs := []consumer.Message{
				{ID: "m-1", Fingerprint: []byte("B")}, // the id reused for another payload
				{ID: "m-1", Fingerprint: []byte("A")},
			}
			results, err := c.HandleEach(ctx, ns, msgs, func(context.Context, consumer.Message) error {
				t.Error("handler ran")
				return nil
			})
			if err != nil {
				t.Fatalf("HandleEach() error = %v", err)
			}
			if results[0].Outcome != consumer.Mismatch {
				t.Errorf("first occurrence = %v, want mismatch", results[0].Outcome)
			}
			if r := results[1]; r.Outcome != tt.want || r.Ack() != tt.wantAck {
				t.Errorf("repeat = %v (ack %v, err %v); want %v (ack %v)", r.Outcome, r.Ack(), r.Err, tt.want, tt.wantAck)
			}
			// The repeat alone, as a later batch sees it, agrees.
			later, _ := c.HandleEach(ctx, ns, msgs[1:], ok)
			if later[0].Outcome != tt.want {
				t.Errorf("repeat in a later batch = %v, want %v", later[0].Outcome, tt.want)
			}
		})
	}
}

// itemErrorService answers the first item of every BatchReserve with an
// UNAVAILABLE item error, as a custom Service or a partial answer might.
type itemErrorService struct{ *env }

func (s itemErrorService) BatchReserve(ctx context.Context, req *idemv1.BatchReserveRequest) (*idemv1.BatchReserveResponse, error) {
	resp, err := s.env.BatchReserve(ctx, &idemv1.BatchReserveRequest{
		Tenant: req.GetTenant(), Namespace: req.GetNamespace(), LeaseTtl: req.GetLeaseTtl(), Retention: req.GetRetention(), Items: req.GetItems()[1:],
	})
	if err != nil {
		return nil, err
	}
	first := &idemv1.BatchReserveResponse_Result{Error: &idemv1.ItemError{Code: 14, Message: "shard unavailable"}}
	return &idemv1.BatchReserveResponse{Results: append([]*idemv1.BatchReserveResponse_Result{first}, resp.GetResults()...)}, nil
}

// TestBatchRepeatAfterReserveItemError: when idem did not answer for an
// ID's first occurrence, a repeat with another payload is retried like it,
// not reported as a Mismatch: the record may hold the repeat's payload.
func TestBatchRepeatAfterReserveItemError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	e := newEnv(t)
	holdLease(ctx, t, e, "m-1", time.Minute) // held with an empty fingerprint
	c := consumer.New(itemErrorService{e}, consumer.WithClock(e.storeClock))
	msgs := []consumer.Message{
		{ID: "m-1", Fingerprint: []byte("B")},
		{ID: "m-1"}, // the held message's redelivery
	}
	results, err := c.HandleEach(ctx, ns, msgs, func(context.Context, consumer.Message) error {
		t.Error("handler ran")
		return nil
	})
	if err != nil {
		t.Fatalf("HandleEach() error = %v", err)
	}
	if r := results[0]; r.Outcome != consumer.Errored || r.Ack() {
		t.Errorf("first occurrence = %v (ack %v), want errored, not acked", r.Outcome, r.Ack())
	}
	if r := results[1]; r.Outcome == consumer.Mismatch || r.Ack() {
		t.Errorf("repeat = %v (ack %v, err %v); want neither a mismatch nor acked", r.Outcome, r.Ack(), r.Err)
	}
}
