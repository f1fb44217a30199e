package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/idemhq/idem/client"
	"github.com/idemhq/idem/client/consumer"
	"github.com/idemhq/idem/client/kafka"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage/memory"
)

const (
	defaultTestTimeout = 20 * time.Second
	topic              = "orders"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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

// newCluster starts kfake with the topic in 3 partitions and produces n
// records; it returns the broker addresses and each partition's last offset.
func newCluster(ctx context.Context, t *testing.T, n int) ([]string, map[int32]int64) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, topic))
	if err != nil {
		t.Fatalf("kfake.NewCluster() = %v", err)
	}
	t.Cleanup(c.Close)
	p, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	last := map[int32]int64{}
	for i := range n {
		r := &kgo.Record{Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "order-%03d", i)}
		if err := p.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatalf("ProduceSync() = %v", err)
		}
		last[r.Partition] = max(last[r.Partition], r.Offset)
	}
	return c.ListenAddrs(), last
}

func newGroupClient(t *testing.T, addrs []string, group string, extra ...kgo.Opt) *kgo.Client {
	t.Helper()
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(addrs...), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll(), kgo.FetchMaxWait(100 * time.Millisecond),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	}, extra...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// effects is the side-effect table, one counter per record value, guarded
// by the idem token: a write not newer than the last applied is refused.
type effects struct {
	mu        sync.Mutex
	count     map[string]int
	token     map[string]uint64
	appliedBy map[string]*kgo.Record // the delivery that applied it
	calls     int
}

func newEffects() *effects {
	return &effects{count: map[string]int{}, token: map[string]uint64{}, appliedBy: map[string]*kgo.Record{}}
}

func (e *effects) apply(ctx context.Context, r *kgo.Record) error {
	tok, ok := client.TokenFromContext(ctx)
	id := string(r.Value)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls++
	if !ok || tok <= e.token[id] {
		return consumer.Permanent(fmt.Errorf("stale token %d for %s", tok, id))
	}
	e.token[id] = tok
	e.count[id]++
	e.appliedBy[id] = r
	return nil
}

// tracker follows what a test phase saw, to stop it once every partition's
// last record was done, and to count the duplicates it expects.
type tracker struct {
	eff *effects

	mu             sync.Mutex
	last           map[int32]int64
	doneLast       map[int32]bool
	all            chan struct{}
	wantDuplicates int
	deliveries     int
}

func (tr *tracker) reset(last map[int32]int64) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.last, tr.doneLast, tr.all = last, map[int32]bool{}, make(chan struct{})
}

func (tr *tracker) observe(r *kgo.Record, res consumer.Result) {
	tr.eff.mu.Lock()
	by, applied := tr.eff.appliedBy[string(r.Value)]
	tr.eff.mu.Unlock()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.deliveries++
	if applied && by != r {
		tr.wantDuplicates++
	}
	if res.Ack() && r.Offset == tr.last[r.Partition] && !tr.doneLast[r.Partition] {
		tr.doneLast[r.Partition] = true
		if len(tr.doneLast) == len(tr.last) {
			close(tr.all)
		}
	}
}

func runConsumer(ctx context.Context, t *testing.T, idem *consumer.Consumer, cl *kgo.Client, tr *tracker, handler func(context.Context, *kgo.Record) error) chan error {
	t.Helper()
	c, err := kafka.New(idem, cl, kafka.WithNamespace("orders-projector"), kafka.WithMaxPoll(10),
		kafka.WithRetryDelay(10*time.Millisecond), kafka.WithObserver(tr.observe))
	if err != nil {
		t.Fatalf("kafka.New() = %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, handler) }()
	return done
}

// TestExactlyOnceEffects: N records; the consumer dies between a side
// effect and its commit; two members of the group then restart it (with a
// rebalance as the second joins) from the uncommitted offsets; finally a new
// group replays the topic from the start. Every record has exactly one
// effect, and the duplicate counter equals the deliveries of records already
// processed.
func TestExactlyOnceEffects(t *testing.T) {
	const n, crashAt = 60, 15
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	addrs, last := newCluster(ctx, t, n)
	idem := consumer.New(newIdem(t))
	eff := newEffects()
	tr := &tracker{eff: eff}
	tr.reset(last)

	// 1. Crash after the side effect of the crashAt-th record.
	ctx1, kill := context.WithCancel(ctx)
	applied := 0
	cl1 := newGroupClient(t, addrs, "projector")
	done := runConsumer(ctx1, t, idem, cl1, tr, func(ctx context.Context, r *kgo.Record) error {
		if err := eff.apply(ctx, r); err != nil {
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
	cl1.CloseAllowingRebalance()

	// 2. Two members restart the group from its committed offsets.
	handler := func(ctx context.Context, r *kgo.Record) error { return eff.apply(ctx, r) }
	ctx2, stop := context.WithCancel(ctx)
	var dones []chan error
	var clients []*kgo.Client
	for range 2 {
		cl := newGroupClient(t, addrs, "projector")
		clients = append(clients, cl)
		dones = append(dones, runConsumer(ctx2, t, idem, cl, tr, handler))
	}
	select {
	case <-tr.all:
	case <-ctx.Done():
		t.Fatal("the restarted group did not reach the end of every partition")
	}
	stop()
	for i, d := range dones {
		<-d
		clients[i].CloseAllowingRebalance()
	}
	if got := idem.Stats().Duplicates.Load(); got == 0 {
		t.Error("duplicates after the restart = 0, want > 0 (processed records whose offsets were not committed)")
	}

	// 3. An operator replays the topic from the start, outside any group.
	tr.reset(last)
	calls := eff.calls
	ctx3, stop3 := context.WithCancel(ctx)
	cl3, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	done = runConsumer(ctx3, t, idem, cl3, tr, handler)
	select {
	case <-tr.all:
	case <-ctx.Done():
		tr.mu.Lock()
		t.Fatalf("the replay did not reach the end of every partition: done %v of %v, deliveries %d, stats dup %d", tr.doneLast, tr.last, tr.deliveries, idem.Stats().Duplicates.Load())
	}
	stop3()
	<-done
	cl3.Close()
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
	tr.mu.Lock()
	defer tr.mu.Unlock()
	t.Logf("stats: processed %d, duplicates %d, released %d, in-flight %d; deliveries %d", s.Processed.Load(), s.Duplicates.Load(), s.Released.Load(), s.InFlight.Load(), tr.deliveries)
	if got := s.Processed.Load(); got != n {
		t.Errorf("Stats().Processed = %d, want %d", got, n)
	}
	if got := s.Duplicates.Load(); got != int64(tr.wantDuplicates) || got < n {
		t.Errorf("Stats().Duplicates = %d, want %d (deliveries of processed records, at least the %d replayed)", got, tr.wantDuplicates, n)
	}
}

func TestNewRefusesAutoCommit(t *testing.T) {
	cl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"), kgo.ConsumerGroup("g"), kgo.ConsumeTopics(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kafka.New(consumer.New(newIdem(t)), cl); err == nil {
		t.Error("kafka.New() with auto-commit = nil error, want an error")
	}
}

func TestMessageIDs(t *testing.T) {
	r := &kgo.Record{Topic: "orders", Partition: 2, Offset: 41, Headers: []kgo.RecordHeader{{Key: "event-id", Value: []byte("ev-7")}}}
	bare := &kgo.Record{Topic: "orders", Partition: 0, Offset: 3}
	tests := []struct {
		name string
		f    func(*kgo.Record) (string, error)
		r    *kgo.Record
		want string
	}{
		{"offset", kafka.OffsetID, r, "orders/2/41"},
		{"header", kafka.HeaderID("event-id"), r, "ev-7"},
		{"header missing falls back to offset", kafka.HeaderID("event-id"), bare, "orders/0/3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.f(tt.r)
			if err != nil || got != tt.want {
				t.Errorf("id = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
