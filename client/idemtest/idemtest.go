// Package idemtest runs a real idem in-process for the tests of services
// that use package client: a memory store behind the real server, reached
// either directly (client.Local) or over an in-memory gRPC connection
// (*client.Client over bufconn). Nothing is faked: the state machine,
// validation and error mapping are the production ones. Dial also serves
// with idemd's gRPC server, so it refuses a request too large for idemd
// as idemd does; Local serves any size (see client.Local).
//
// The server waits on the same clock as the store: a Reserve asking to wait
// for a key another attempt holds (its wait field, the server interceptor's
// WithWait, a consumer's WithWait) ends when the key is completed or
// released, when Advance moves the fake clock past the wait or the
// holder's lease, or just before the call's deadline — not when the wait
// has passed in real time. Give such calls a deadline, or advance the clock.
package idemtest

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc"
	"google.golang.org/grpc/test/bufconn"

	"github.com/idemhq/idem/client"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage/memory"
)

// Idem is an in-process idem, stopped when the test ends.
type Idem struct {
	// Store is the memory store, for inspecting records.
	Store *memory.Store
	// Server is the idem service over Store.
	Server *server.Service
	// Clock is the store's and server's clock; advance it to expire leases
	// and records, and to end waiting Reserves.
	Clock clockwork.Clock
}

// Option configures New.
type Option func(*config)

type config struct {
	clock  clockwork.Clock
	logger *slog.Logger
}

// WithClock sets the clock of the store and the server (default: a fake
// clock, so leases and records expire only when the test advances it; a
// waiting Reserve waits on it too, see the package documentation).
func WithClock(c clockwork.Clock) Option { return func(o *config) { o.clock = c } }

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(o *config) { o.logger = l } }

// New starts an idem for t.
func New(t testing.TB, opts ...Option) *Idem {
	t.Helper()
	c := config{clock: clockwork.NewFakeClock(), logger: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(&c)
	}
	store := memory.New(memory.WithClock(c.clock), memory.WithLogger(c.logger))
	srv, err := server.New(store, server.WithClock(c.clock), server.WithLogger(c.logger))
	if err != nil {
		store.Close()
		t.Fatalf("idemtest: %v", err)
	}
	t.Cleanup(func() {
		srv.Close()
		store.Close()
	})
	return &Idem{Store: store, Server: srv, Clock: c.clock}
}

// Advance moves the fake clock forward, expiring leases and records.
// It panics when WithClock set a clock that cannot be advanced.
func (i *Idem) Advance(d time.Duration) {
	fc, ok := i.Clock.(interface{ Advance(time.Duration) })
	if !ok {
		panic("idemtest: Advance needs a fake clock")
	}
	fc.Advance(d)
}

// Local returns the idem as an in-process client.Service.
func (i *Idem) Local() client.Service { return client.Local(i.Server) }

// Dial serves the idem over bufconn with idemd's gRPC server and returns a
// *client.Client connected to it, closed when the test ends. opts are added
// to the client's.
func (i *Idem) Dial(t testing.TB, opts ...client.Option) *client.Client {
	t.Helper()
	l := bufconn.Listen(1 << 20)
	// idemd's gRPC server (its codec, health), so answers match production.
	gs := server.NewGRPCServer(i.Server)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = gs.Serve(l)
	}()
	opts = append([]client.Option{
		client.WithInsecure(),
		client.WithDialOptions(grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return l.DialContext(ctx) })),
	}, opts...)
	c, err := client.New("passthrough:///bufnet", opts...)
	if err != nil {
		gs.Stop()
		wg.Wait()
		t.Fatalf("idemtest: %v", err)
	}
	t.Cleanup(func() {
		c.Close()
		gs.Stop()
		wg.Wait()
	})
	return c
}
