package cockroach

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/idemhq/idem/storage"
)

// tripCounter counts network round trips: a write that follows a read
// (or the first write) starts one.
type tripCounter struct {
	mu      sync.Mutex
	reading bool
	trips   int
	queries int
}

func (c *tripCounter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.trips, c.queries, c.reading = 0, 0, true
}

func (c *tripCounter) get() (trips, queries int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.trips, c.queries
}

type countingConn struct {
	net.Conn
	c *tripCounter
}

func (cc countingConn) Write(b []byte) (int, error) {
	cc.c.mu.Lock()
	if cc.c.reading {
		cc.c.trips++
		cc.c.reading = false
	}
	cc.c.mu.Unlock()
	return cc.Conn.Write(b)
}

func (cc countingConn) Read(b []byte) (int, error) {
	n, err := cc.Conn.Read(b)
	if n > 0 {
		cc.c.mu.Lock()
		cc.c.reading = true
		cc.c.mu.Unlock()
	}
	return n, err
}

// TraceQueryStart counts statements sent through pgx.
func (c *tripCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.mu.Lock()
	c.queries++
	c.mu.Unlock()
	return ctx
}

func (c *tripCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TraceBatchStart counts a pipelined batch as one send.
func (c *tripCounter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	c.mu.Lock()
	c.queries++
	c.mu.Unlock()
	return ctx
}

func (c *tripCounter) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (c *tripCounter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

// openCounting opens a store on a fresh migrated schema whose connections
// count their round trips and statements; maxConns 0 keeps the default pool.
func openCounting(t *testing.T, maxConns int32, params ...string) (*Store, *tripCounter) {
	t.Helper()
	u := migratedURL(t, postgresURL(t))
	pu, _ := url.Parse(withParams(t, u, append([]string{ParamSweepInterval, "0"}, params...)...))
	cfg, err := parseConfig(pu)
	if err != nil {
		t.Fatal(err)
	}
	counter := &tripCounter{}
	if maxConns > 0 {
		cfg.pool.MaxConns = maxConns
	}
	cfg.pool.ConnConfig.Tracer = counter
	dialer := &net.Dialer{}
	cfg.pool.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{c, counter}, nil
	}
	s, err := openConfig(testCtx(t), cfg, nil)
	if err != nil {
		t.Fatalf("openConfig() error = %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, counter
}

// TestRoundTrips proves every data-plane operation, and batches of 1,000,
// cost one send (a statement, or BatchComplete's pipelined batch) and one
// network round trip once the connection has prepared the statement (pgx
// caches prepared statements per connection).
func TestRoundTrips(t *testing.T) {
	ctx := testCtx(t)
	s, counter := openCounting(t, 1)

	const ttl, ret = time.Minute, time.Hour
	res := &storage.Result{Code: 0, Body: []byte("ok"), Metadata: map[string]string{"a": "b"}}
	id := func(k string) storage.ID { return storage.ID{Tenant: "rt", Namespace: "/x.v1.X/Y", Key: k} }
	batch := func(prefix string) ([]storage.ReserveParams, []storage.CompleteParams) {
		rs := make([]storage.ReserveParams, 1000)
		cs := make([]storage.CompleteParams, 1000)
		for i := range rs {
			rs[i] = storage.ReserveParams{ID: id(fmt.Sprintf("%s-%04d", prefix, i)), Fingerprint: []byte("fp"), LeaseTTL: ttl, Retention: ret}
			cs[i] = storage.CompleteParams{ID: rs[i].ID, Token: 1, Result: res, Retention: ret}
		}
		return rs, cs
	}
	// ops run in order on keys of their own; round is the key suffix, so
	// the warm-up round prepares every statement and the second measures.
	type op struct {
		name string
		run  func(round string) error
	}
	ops := []op{
		{"Reserve/new", func(r string) error {
			_, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id("a" + r), Fingerprint: []byte("fp"), LeaseTTL: ttl, Retention: ret})
			return err
		}},
		{"Checkpoint", func(r string) error {
			_, err := s.Checkpoint(ctx, id("a"+r), 1, storage.Checkpoint{Phase: "p", Data: []byte("d")})
			return err
		}},
		{"ExtendLease", func(r string) error { _, err := s.ExtendLease(ctx, id("a"+r), 1, ttl); return err }},
		{"Complete", func(r string) error {
			_, err := s.Complete(ctx, storage.CompleteParams{ID: id("a" + r), Token: 1, Result: res, Retention: ret})
			return err
		}},
		{"Reserve/completed", func(r string) error {
			out, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id("a" + r), Fingerprint: []byte("fp"), LeaseTTL: ttl, Retention: ret})
			if err == nil && out != storage.OutcomeCompleted {
				return fmt.Errorf("outcome %v, want COMPLETED", out)
			}
			return err
		}},
		{"Complete/retry", func(r string) error {
			_, err := s.Complete(ctx, storage.CompleteParams{ID: id("a" + r), Token: 1, Result: res, Retention: ret})
			return err
		}},
		{"Lookup", func(r string) error { _, err := s.Lookup(ctx, id("a"+r)); return err }},
		{"Reserve/forRelease", func(r string) error {
			_, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id("b" + r), Fingerprint: []byte("fp"), LeaseTTL: ttl, Retention: ret})
			return err
		}},
		{"Release", func(r string) error { _, err := s.Release(ctx, id("b"+r), 1); return err }},
		{"Reserve/takeover", func(r string) error {
			out, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id("b" + r), Fingerprint: []byte("fp"), LeaseTTL: ttl, Retention: ret})
			if err == nil && out != storage.OutcomeReserved {
				return fmt.Errorf("outcome %v, want RESERVED", out)
			}
			return err
		}},
		{"BatchReserve/1000", func(r string) error {
			rs, _ := batch("c" + r)
			_, err := s.BatchReserve(ctx, rs)
			return err
		}},
		{"BatchComplete/1000", func(r string) error {
			_, cs := batch("c" + r)
			got, err := s.BatchComplete(ctx, cs)
			for i, g := range got {
				if g.Err != nil {
					return fmt.Errorf("item %d: %w", i, g.Err)
				}
			}
			return err
		}},
	}
	for _, o := range ops {
		if err := o.run("-warm"); err != nil {
			t.Fatalf("%s (warm-up) error = %v", o.name, err)
		}
	}
	for _, o := range ops {
		t.Run(o.name, func(t *testing.T) {
			counter.reset()
			if err := o.run("-measured"); err != nil {
				t.Fatalf("%s error = %v", o.name, err)
			}
			trips, queries := counter.get()
			if trips != 1 || queries != 1 {
				t.Errorf("%s: round trips = %d, sends = %d; want 1 and 1", o.name, trips, queries)
			}
		})
	}
}
