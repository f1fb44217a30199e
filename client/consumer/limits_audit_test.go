package consumer_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/idemhq/idem/client"
	"github.com/idemhq/idem/client/consumer"
	"github.com/idemhq/idem/client/idemtest"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/memory"
)

// limitedService is an in-process idem with lim.
func limitedService(t *testing.T, lim server.Limits, opts ...server.Option) (client.Service, *memory.Store) {
	t.Helper()
	st := memory.New(memory.WithLogger(slog.New(slog.DiscardHandler)))
	srv, err := server.New(st, append([]server.Option{server.WithLimits(lim), server.WithLogger(slog.New(slog.DiscardHandler))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Close()
		st.Close()
	})
	return client.Local(srv), st
}

// TestMessageIDsAtTheKeyLimit: a message id is idem's key, so an id of
// exactly the key limit, in multi-byte UTF-8, under the default limit or a
// raised one, is processed once and a duplicate afterwards, through Handle
// and HandleBatch; one byte more is Invalid, naming the key, and stores
// nothing. A 64-byte fingerprint (the default limit) is accepted, 65 not.
func TestMessageIDsAtTheKeyLimit(t *testing.T) {
	for _, maxKey := range []int{256, 400} {
		t.Run(fmt.Sprint(maxKey), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
			defer cancel()
			svc, st := limitedService(t, server.Limits{MaxKeyBytes: maxKey})
			c := consumer.New(svc)
			id := func(tag string) string {
				return tag + strings.Repeat("é", (maxKey-len(tag))/2) + strings.Repeat("x", (maxKey-len(tag))%2)
			}
			runs := 0
			fn := func(context.Context) error { runs++; return nil }
			fp := bytes.Repeat([]byte{0xff}, 64)
			for i, want := range []consumer.Outcome{consumer.Processed, consumer.Duplicate} {
				r, err := c.Handle(ctx, ns, id("a"), fp, fn)
				if err != nil || r.Outcome != want {
					t.Errorf("Handle(%d-byte id) #%d = %v, %v; want %v", len(id("a")), i, r.Outcome, err, want)
				}
			}
			rec, err := st.Lookup(ctx, storage.ID{Tenant: server.DefaultTenant, Namespace: ns, Key: id("a")})
			if err != nil || rec.Key != id("a") || !bytes.Equal(rec.Fingerprint, fp) {
				t.Errorf("record = %v, %v; want the id and fingerprint byte for byte", rec, err)
			}
			r, err := c.Handle(ctx, ns, id("a")+"x", nil, fn)
			if r.Outcome != consumer.Invalid || !errors.Is(err, consumer.ErrInvalidMessage) || !strings.Contains(err.Error(), "key") {
				t.Errorf("Handle(%d-byte id) = %v, %v; want Invalid naming the key", maxKey+1, r.Outcome, err)
			}
			if _, err := c.Handle(ctx, ns, id("f"), append(fp, 0), fn); !errors.Is(err, consumer.ErrInvalidMessage) || !strings.Contains(err.Error(), "fingerprint") {
				t.Errorf("Handle(65-byte fingerprint) error = %v, want Invalid naming the fingerprint", err)
			}
			rs, err := c.HandleBatch(ctx, ns, []consumer.Message{{ID: id("b")}, {ID: id("b") + "x"}, {ID: id("a"), Fingerprint: fp}}, func(_ context.Context, b []consumer.Message) []error {
				runs += len(b)
				return make([]error, len(b))
			})
			if err != nil || rs[0].Outcome != consumer.Processed || rs[1].Outcome != consumer.Invalid || rs[2].Outcome != consumer.Duplicate {
				t.Errorf("HandleBatch() = %v, %v; want processed, invalid, duplicate", rs, err)
			}
			if runs != 2 {
				t.Errorf("handler runs = %d, want 2", runs)
			}
			recs, _, err := st.List(ctx, storage.ListParams{Tenant: server.DefaultTenant, Namespace: ns, Limit: 10})
			if err != nil || len(recs) != 2 {
				t.Errorf("stored %d records, %v; want the two good ids alone", len(recs), err)
			}
		})
	}
}

// TestBatchOverALoweredServerLimit: a server whose batch limit was lowered
// below consumer.MaxBatch refuses a longer HandleBatch as a whole, with an
// error naming the items, and no message is run or stored.
func TestBatchOverALoweredServerLimit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	svc, st := limitedService(t, server.Limits{MaxBatch: 3})
	c := consumer.New(svc)
	msgs := make([]consumer.Message, 4)
	for i := range msgs {
		msgs[i] = consumer.Message{ID: fmt.Sprint("m", i)}
	}
	ran := false
	rs, err := c.HandleBatch(ctx, ns, msgs, func(_ context.Context, b []consumer.Message) []error { ran = true; return make([]error, len(b)) })
	if err == nil || !strings.Contains(err.Error(), "items has 4 items, more than 3") || !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("HandleBatch(4 messages) error = %v, want the batch refused naming items", err)
	}
	for i, r := range rs {
		if r.Outcome != consumer.Errored || r.Ack() {
			t.Errorf("result %d = %v, want Errored, not acked", i, r.Outcome)
		}
	}
	if ran {
		t.Error("the handler ran for a refused batch")
	}
	if recs, _, _ := st.List(ctx, storage.ListParams{Tenant: server.DefaultTenant, Namespace: ns, Limit: 10}); len(recs) != 0 {
		t.Errorf("stored %d records, want none", len(recs))
	}
	// At the lowered limit it goes through.
	rs, err = c.HandleBatch(ctx, ns, msgs[:3], func(_ context.Context, b []consumer.Message) []error { return make([]error, len(b)) })
	if err != nil || rs[2].Outcome != consumer.Processed {
		t.Errorf("HandleBatch(3 messages) = %v, %v; want processed", rs, err)
	}
}

// TestPermanentErrorOverTheResultLimit: a permanent failure is recorded
// with its error's text, which a namespace's result limit may refuse. The
// refused Complete left the record IN_PROGRESS, and the message ran again
// once the lease lapsed. The failure is recorded with its code alone.
func TestPermanentErrorOverTheResultLimit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	svc, st := limitedService(t, server.Limits{}, server.WithNamespacePolicies(map[string]server.Policy{
		ns: {MaxResultSize: 16, StoreResults: true},
	}))
	c := consumer.New(svc)
	long := consumer.Permanent(errors.New(strings.Repeat("bad order ", 10)))
	wantFailed := func(key string) {
		t.Helper()
		rec, err := st.Lookup(ctx, storage.ID{Tenant: server.DefaultTenant, Namespace: ns, Key: key})
		if err != nil || rec.State != storage.StateCompleted || rec.Result.Code != 2 {
			t.Errorf("record %s = %+v, %v; want COMPLETED with code UNKNOWN", key, rec, err)
		}
	}
	r, err := c.Handle(ctx, ns, "one", nil, func(context.Context) error { return long })
	if err != nil || r.Outcome != consumer.Failed {
		t.Errorf("Handle() = %+v, %v; want Failed", r, err)
	}
	wantFailed("one")
	msgs := []consumer.Message{{ID: "b1"}, {ID: "b2"}}
	rs, err := c.HandleBatch(ctx, ns, msgs, func(_ context.Context, batch []consumer.Message) []error {
		return []error{nil, long}
	})
	if err != nil || rs[0].Outcome != consumer.Processed || rs[1].Outcome != consumer.Failed {
		t.Errorf("HandleBatch() = %+v, %v; want Processed, Failed", rs, err)
	}
	wantFailed("b2")
}

// TestPermanentErrorTextIsBounded: a permanent failure's record keeps its
// error text cut to a few KiB. A 5 MiB text made the Complete larger than
// idemd reads: it failed in transport, and the message ran again on its
// redelivery.
func TestPermanentErrorTextIsBounded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	idem := idemtest.New(t)
	c := consumer.New(idem.Dial(t))
	huge := consumer.Permanent(errors.New("bad order: " + strings.Repeat("é", 5<<19)))
	r, err := c.Handle(ctx, ns, "huge", nil, func(context.Context) error { return huge })
	if err != nil || r.Outcome != consumer.Failed {
		t.Fatalf("Handle() = %+v, %v; want Failed", r, err)
	}
	rec, err := idem.Store.Lookup(ctx, storage.ID{Tenant: server.DefaultTenant, Namespace: ns, Key: "huge"})
	if err != nil || rec.State != storage.StateCompleted || !strings.HasPrefix(rec.Result.Message, "bad order: éé") || len(rec.Result.Message) > 8<<10 {
		t.Errorf("record = %v, %v; want COMPLETED keeping the start of the error text, a few KiB", rec.State, err)
	}
}
