package natsjs_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/idemhq/idem/client"
	"github.com/idemhq/idem/client/consumer"
	"github.com/idemhq/idem/client/natsjs"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage/memory"
)

const defaultTestTimeout = 60 * time.Second

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/nats-io/nats.go.(*Conn).doReconnect"))
}

func newIdem(t *testing.T) client.Service {
	t.Helper()
	st := memory.New()
	srv, err := server.New(st)
	if err != nil {
		t.Fatalf("server.New() = %v", err)
	}
	t.Cleanup(func() {
		srv.Close()
		st.Close()
	})
	return client.Local(srv)
}

// newStream connects to the NATS of IDEM_TEST_NATS_URL and makes a stream of
// its own, deleted when the test ends.
func newStream(ctx context.Context, t *testing.T) (jetstream.JetStream, jetstream.Stream, string) {
	t.Helper()
	url := os.Getenv("IDEM_TEST_NATS_URL")
	if url == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("IDEM_TEST_NATS_URL is not set, and CI is: the JetStream tests need a NATS server")
		}
		t.Skip("set IDEM_TEST_NATS_URL=nats://127.0.0.1:4222 to run the JetStream tests against NATS with JetStream enabled")
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect to IDEM_TEST_NATS_URL: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream.New() = %v", err)
	}
	name := fmt.Sprintf("IDEMTEST_%d", rand.Uint64())
	subject := "idemtest." + name
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subject}, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatalf("CreateStream() = %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := js.DeleteStream(ctx, name); err != nil {
			t.Errorf("DeleteStream() = %v", err)
		}
	})
	return js, s, subject
}

// explicitConsumer is a durable consumer with explicit acks over a new
// stream holding n messages.
func explicitConsumer(ctx context.Context, t *testing.T, n int) jetstream.Consumer {
	t.Helper()
	js, stream, subject := newStream(ctx, t)
	publish(ctx, t, js, subject, n)
	jc, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	return jc
}

func publish(ctx context.Context, t *testing.T, js jetstream.JetStream, subject string, n int) {
	t.Helper()
	for i := range n {
		id := fmt.Sprintf("order-%03d", i)
		if _, err := js.Publish(ctx, subject, []byte(id), jetstream.WithMsgID(id)); err != nil {
			t.Fatalf("Publish(%s) = %v", id, err)
		}
	}
}

// effects is the consumer's side-effect table: one counter per message,
// guarded by the idem token: a write whose token is not newer than the last
// one applied for that message is refused.
type effects struct {
	mu        sync.Mutex
	count     map[string]int
	token     map[string]uint64
	appliedBy map[string]string // which delivery applied it
	calls     int
}

func newEffects() *effects {
	return &effects{count: map[string]int{}, token: map[string]uint64{}, appliedBy: map[string]string{}}
}

func delivery(m jetstream.Msg) string {
	md, _ := m.Metadata()
	return fmt.Sprintf("%s/%d", md.Consumer, md.NumDelivered)
}

func (e *effects) apply(ctx context.Context, id string, m jetstream.Msg) error {
	tok, ok := client.TokenFromContext(ctx)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls++
	if !ok || tok <= e.token[id] {
		return consumer.Permanent(fmt.Errorf("stale token %d for %s", tok, id))
	}
	e.token[id] = tok
	e.count[id]++
	e.appliedBy[id] = delivery(m)
	return nil
}

// drain waits until the JetStream consumer has nothing pending or unacked.
func drain(ctx context.Context, t *testing.T, c jetstream.Consumer) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		info, err := c.Info(ctx)
		if err != nil {
			t.Fatalf("consumer Info() = %v", err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Stream > 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("consumer did not drain: pending %d, ack pending %d", info.NumPending, info.NumAckPending)
		case <-tick.C:
		}
	}
}

// TestExactlyOnceEffects publishes N messages, kills the consumer between a
// side effect and the ack, restarts it on the same durable consumer (the
// unacknowledged batch is redelivered), then replays the whole stream
// through a new consumer: every message has exactly one effect, and the
// duplicate counter equals the redeliveries of already-processed messages.
func TestExactlyOnceEffects(t *testing.T) {
	const n, crashAt = 50, 15
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	js, stream, subject := newStream(ctx, t)
	publish(ctx, t, js, subject, n)
	idem := consumer.New(newIdem(t))
	eff := newEffects()

	var mu sync.Mutex
	var wantDuplicates, redeliveries int
	observe := func(m jetstream.Msg, r consumer.Result) {
		mu.Lock()
		defer mu.Unlock()
		md, _ := m.Metadata()
		if md.NumDelivered > 1 || md.Consumer == "replay" {
			redeliveries++
		}
		id := m.Headers().Get(jetstream.MsgIDHeader)
		eff.mu.Lock()
		by, done := eff.appliedBy[id]
		eff.mu.Unlock()
		if done && by != delivery(m) {
			wantDuplicates++
		}
	}
	run := func(ctx context.Context, name string, handler func(context.Context, jetstream.Msg) error) (jetstream.Consumer, chan error) {
		jc, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
			Durable: name, AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Second, DeliverPolicy: jetstream.DeliverAllPolicy,
		})
		if err != nil {
			t.Fatalf("CreateOrUpdateConsumer(%s) = %v", name, err)
		}
		c := natsjs.New(idem, jc, natsjs.WithNamespace("orders-projector"), natsjs.WithBatch(10, 100*time.Millisecond),
			natsjs.WithNakDelay(10*time.Millisecond), natsjs.WithObserver(observe))
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx, handler) }()
		return jc, done
	}

	// 1. The consumer dies right after the side effect of message crashAt.
	ctx1, kill := context.WithCancel(ctx)
	applied := 0
	_, done := run(ctx1, "projector", func(ctx context.Context, m jetstream.Msg) error {
		if err := eff.apply(ctx, m.Headers().Get(jetstream.MsgIDHeader), m); err != nil {
			return err
		}
		if applied++; applied == crashAt {
			kill()
		}
		return nil
	})
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run() = %v, want context.Canceled", err)
	}

	// 2. It restarts on the same durable consumer.
	handler := func(ctx context.Context, m jetstream.Msg) error {
		return eff.apply(ctx, m.Headers().Get(jetstream.MsgIDHeader), m)
	}
	ctx2, stop := context.WithCancel(ctx)
	jc, done := run(ctx2, "projector", handler)
	drain(ctx, t, jc)
	stop()
	<-done
	if got := idem.Stats().Duplicates.Load(); got == 0 {
		t.Errorf("duplicates after the restart = 0, want > 0 (the crashed batch's processed messages)")
	}

	// 3. An operator replays the stream from the start.
	calls := eff.calls
	ctx3, stop3 := context.WithCancel(ctx)
	jc, done = run(ctx3, "replay", handler)
	drain(ctx, t, jc)
	stop3()
	<-done
	if eff.calls != calls {
		t.Errorf("handler ran %d times during the replay, want 0", eff.calls-calls)
	}

	for i := range n {
		id := fmt.Sprintf("order-%03d", i)
		if got := eff.count[id]; got != 1 {
			t.Errorf("effects[%s] = %d, want 1", id, got)
		}
	}
	s := idem.Stats()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("stats: processed %d, duplicates %d, released %d, redeliveries %d", s.Processed.Load(), s.Duplicates.Load(), s.Released.Load(), redeliveries)
	if got := s.Processed.Load(); got != n {
		t.Errorf("Stats().Processed = %d, want %d", got, n)
	}
	if got := s.Duplicates.Load(); got != int64(wantDuplicates) || got < n {
		t.Errorf("Stats().Duplicates = %d, want %d (redeliveries of processed messages, at least the %d replayed)", got, wantDuplicates, n)
	}
	if got := int64(redeliveries); got != s.Duplicates.Load()+s.Released.Load() {
		t.Errorf("redeliveries = %d, want duplicates %d + released %d", got, s.Duplicates.Load(), s.Released.Load())
	}
	if s.Released.Load() == 0 {
		t.Error("Stats().Released = 0, want the crashed batch's unstarted messages released")
	}
}

// TestInFlightIsNakedWithDelay: a message another attempt holds is not run
// and comes back after the holder finished.
func TestInFlightIsNakedWithDelay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	js, stream, subject := newStream(ctx, t)
	publish(ctx, t, js, subject, 3)
	svc := newIdem(t)
	_, err := svc.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "order-001", LeaseTtl: durationpb.New(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	jc, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	idem := consumer.New(svc, consumer.WithNamespace("ns"))
	inFlight := make(chan consumer.Result, 1)
	c := natsjs.New(idem, jc, natsjs.WithNamespace("ns"), natsjs.WithBatch(10, 100*time.Millisecond), natsjs.WithObserver(func(m jetstream.Msg, r consumer.Result) {
		if r.Outcome == consumer.InFlight {
			select {
			case inFlight <- r:
			default:
			}
		}
	}))
	var mu sync.Mutex
	var seen []string
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- c.Run(rctx, func(ctx context.Context, m jetstream.Msg) error {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, string(m.Data()))
			return nil
		})
	}()
	var r consumer.Result
	select {
	case r = <-inFlight:
	case <-ctx.Done():
		t.Fatal("order-001 never reported in flight")
	}
	if r.RetryAfter <= 0 || r.RetryAfter > time.Minute {
		t.Errorf("RetryAfter = %v, want about the holder's lease (<= 1m)", r.RetryAfter)
	}
	// order-002 may come in a later fetch than order-001.
	for ready := false; !ready; {
		mu.Lock()
		ready = len(seen) >= 2
		mu.Unlock()
		select {
		case <-ctx.Done():
			ready = true
		case <-time.After(10 * time.Millisecond):
		}
	}
	stop()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(seen) != "[order-000 order-002]" {
		t.Errorf("handler saw %v, want [order-000 order-002] while order-001 is held", seen)
	}
}

func TestDefaultMessageID(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	js, stream, subject := newStream(ctx, t)
	if _, err := js.Publish(ctx, subject, []byte("a"), jetstream.WithMsgID("order-7")); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, subject, []byte("b")); err != nil {
		t.Fatal(err)
	}
	jc, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := jc.Fetch(2, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for m := range batch.Messages() {
		id, err := natsjs.DefaultMessageID(m)
		if err != nil {
			t.Fatalf("DefaultMessageID() = %v", err)
		}
		got = append(got, id)
	}
	name := stream.CachedInfo().Config.Name
	if want := fmt.Sprintf("[order-7 %s:2]", name); fmt.Sprint(got) != want {
		t.Errorf("ids = %v, want %s (the header, else stream:sequence)", got, want)
	}
}
