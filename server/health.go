package server

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/idemhq/idem/internal/codec"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/storage"
)

// healthServices are the names the health service reports on, besides "".
var healthServices = []string{
	idemv1.IdempotencyService_ServiceDesc.ServiceName,
	idemv1.AdminService_ServiceDesc.ServiceName,
}

// HealthServer is the gRPC health service the Service keeps up to date:
// SERVING while a store answers Ping, NOT_SERVING when every store fails
// and after Close. With one store that is the usual "the store answers";
// with a policy resolver routing namespaces to several stores, one store
// that fails fails only its own namespaces (UNAVAILABLE), and is logged,
// but does not take the replica out of its load balancer: that would take
// the namespaces of the stores that still answer down with it, on every
// replica at once when the failed store is a shared one.
func (s *Service) HealthServer() *health.Server { return s.health }

func (s *Service) runHealth() {
	defer s.wg.Done()
	t := s.opts.healthClock.NewTicker(s.opts.healthInterval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.Chan():
			s.checkHealth()
		}
	}
}

// checkHealth pings the stores and publishes the result.
func (s *Service) checkHealth() {
	failed := s.pingAll(s.stores())
	var errs []error
	stores := 0
	if len(failed) > 0 {
		// A policy reload may have dropped, and closed, a store while it
		// was pinged: only the stores the server still routes to count.
		for _, st := range s.stores() {
			stores++
			if err, ok := failed[st]; ok {
				errs = append(errs, err)
			}
		}
	}
	select {
	case <-s.done:
		return // Close set NOT_SERVING for good
	default:
	}
	st := healthpb.HealthCheckResponse_SERVING
	if len(errs) > 0 && len(errs) == stores {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	// Logged when the number of failing stores changes.
	n := int64(len(errs))
	switch prev := s.failing.Swap(n); {
	case n > 0 && prev != n:
		s.opts.logger.Warn("store unhealthy", "err", errors.Join(errs...), "failed_stores", n, "stores", stores, "serving", st == healthpb.HealthCheckResponse_SERVING)
	case n == 0 && prev != 0:
		s.opts.logger.Info("store healthy")
	}
	s.health.SetServingStatus("", st)
	for _, name := range healthServices {
		s.health.SetServingStatus(name, st)
	}
}

// storePing is one Ping of a store, which checks started while it runs join.
type storePing struct {
	done chan struct{}
	err  error
}

// errPingHung is a store whose Ping outlived the health timeout, its
// context ignored.
var errPingHung = errors.New("idem: store ping did not return within the health timeout")

// pingAll pings the stores at once and returns those that failed. Each
// Ping runs in a goroutine given up on at the health timeout: a store
// whose Ping ignores its context (a disk stuck in I/O) would otherwise
// hold the checker, and the SERVING it last published, for as long. A
// check never starts a second Ping of a store while one runs, so a hung
// store holds one goroutine, not one per check.
func (s *Service) pingAll(stores []storage.Store) map[storage.Store]error {
	wctx, cancel := context.WithTimeout(s.bg, s.opts.healthTimeout)
	defer cancel()
	pings := make([]*storePing, len(stores))
	s.pingMu.Lock()
	for i, st := range stores {
		p := s.pings[st]
		if p == nil {
			p = &storePing{done: make(chan struct{})}
			s.pings[st] = p
			go s.ping(st, p)
		}
		pings[i] = p
	}
	s.pingMu.Unlock()
	failed := map[storage.Store]error{}
	for i, p := range pings {
		// A ping that has answered is judged by its answer, even when the
		// timeout has run out meanwhile (waiting on a hung store listed
		// before it): select picks at random among ready cases, and would
		// report a store that answered as hung half the time.
		select {
		case <-p.done:
		default:
			select {
			case <-p.done:
			case <-wctx.Done():
				failed[stores[i]] = errPingHung
				continue
			}
		}
		if p.err != nil {
			failed[stores[i]] = p.err
		}
	}
	return failed
}

func (s *Service) ping(st storage.Store, p *storePing) {
	ctx, cancel := context.WithTimeout(s.bg, s.opts.healthTimeout)
	p.err = st.Ping(ctx)
	cancel()
	s.pingMu.Lock()
	delete(s.pings, st)
	s.pingMu.Unlock()
	close(p.done)
}

// NewGRPCServer returns a gRPC server with the Service, the health service
// and server reflection registered. opts carry the caller's interceptors
// and transport settings.
func NewGRPCServer(svc *Service, opts ...grpc.ServerOption) *grpc.Server {
	// Long-lived stream workers keep their grown stacks, so calls do not pay
	// for a fresh goroutine's stack growth each time (a tenth of a
	// Reserve's CPU without them). gRPC starts a fresh goroutine for a call
	// whenever no worker is idle, and calls that wait on a database stay
	// in flight for milliseconds, so there are enough workers for a few
	// hundred concurrent calls; an idle worker costs only its stack.
	// idem.v1's messages go through their generated encoders (internal/codec),
	// everything else through protobuf-go. Callers' options come after and win.
	// A request carrying the largest result idemd stores (or checkpoint
	// data, bounded alike) must reach validation, which names the field,
	// instead of gRPC's 4 MiB default refusing it as RESOURCE_EXHAUSTED, a
	// code clients retry.
	opts = append([]grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxRequestBytes(svc.opts.limits)),
		grpc.MaxConcurrentStreams(DefaultMaxStreams),
		grpc.NumStreamWorkers(uint32(max(256, 32*runtime.GOMAXPROCS(0)))),
		grpc.ForceServerCodecV2(codec.Codec{}),
		grpc.ChainStreamInterceptor(reflectionUntilClose(svc.done)),
	}, opts...)
	srv := grpc.NewServer(opts...)
	svc.Register(srv)
	healthpb.RegisterHealthServer(srv, watchUntilClose{Server: svc.health, done: svc.done})
	reflection.Register(srv)
	return srv
}

// DefaultMaxStreams bounds the calls one client connection has open at
// once, so that one connection cannot make idemd hold a goroutine and
// buffers for each of a million calls. A client past it queues its calls
// rather than failing them.
const DefaultMaxStreams = 1000

// maxRequestBytes is the largest request idemd reads under limits l:
// gRPC's 4 MiB default, or room for a result of l.MaxResultBytes with
// the framing of its entries (each counts at least
// idem.ResultEntryMinBytes and is framed in fewer), whichever is more.
// A BatchComplete whose results add up to more must be split.
func maxRequestBytes(l Limits) int {
	return max(4<<20, 2*l.MaxResultBytes+64<<10)
}

// watchEndDelay is how long a Watch stream stays open after Close, so the
// NOT_SERVING that Close publishes reaches the watcher before it ends.
const watchEndDelay = 100 * time.Millisecond

// watchUntilClose is the health service with Watch streams that end once
// the service closes. A watcher (a load balancer's) would otherwise keep
// GracefulStop waiting out the whole shutdown timeout.
type watchUntilClose struct {
	*health.Server
	done <-chan struct{}
}

func (w watchUntilClose) Watch(req *healthpb.HealthCheckRequest, ss healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	closing := make(chan struct{})
	go func() {
		select {
		case <-w.done:
			close(closing)
			t := time.NewTimer(watchEndDelay)
			defer t.Stop()
			select {
			case <-t.C:
				cancel()
			case <-ctx.Done():
			}
		case <-ctx.Done():
		}
	}()
	err := w.Server.Watch(req, watchStream{Health_WatchServer: ss, ctx: ctx})
	select {
	case <-closing:
		if ss.Context().Err() == nil {
			return status.Error(codes.Unavailable, "idem: server shutting down")
		}
	default:
	}
	return err
}

// reflectionUntilClose ends server reflection streams once the service
// closes, as watchUntilClose does Watch streams: a tool that keeps one open
// (a gRPC UI) would otherwise hold GracefulStop for the whole shutdown
// timeout. Reflection's handler waits in Recv, not on its context, so Recv
// itself gives up at Close.
func reflectionUntilClose(done <-chan struct{}) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if !strings.HasPrefix(info.FullMethod, "/grpc.reflection.") {
			return handler(srv, ss)
		}
		return handler(srv, recvUntilClose{ServerStream: ss, done: done})
	}
}

type recvUntilClose struct {
	grpc.ServerStream
	done <-chan struct{}
}

func (s recvUntilClose) RecvMsg(m any) error {
	errc := make(chan error, 1)
	// The receive stays this goroutine's alone; once the handler returns,
	// gRPC ends the stream and it returns too.
	go func() { errc <- s.ServerStream.RecvMsg(m) }()
	select {
	case err := <-errc:
		return err
	case <-s.done:
		return status.Error(codes.Unavailable, "idem: server shutting down")
	}
}

// watchStream is a Watch stream whose context also ends at Close.
type watchStream struct {
	healthpb.Health_WatchServer
	ctx context.Context
}

func (s watchStream) Context() context.Context { return s.ctx }
