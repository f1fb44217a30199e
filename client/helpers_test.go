package client_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/idemhq/idem/client"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage/memory"
)

const defaultTestTimeout = 20 * time.Second

var quiet = slog.New(slog.DiscardHandler)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// listener is a bufconn or a loopback TCP listener with the matching dialer.
type listener struct {
	net.Listener
	target string
	dial   []grpc.DialOption
}

func listen(t testing.TB, tcp bool) *listener {
	t.Helper()
	if tcp {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		return &listener{Listener: l, target: "passthrough:///" + l.Addr().String()}
	}
	l := bufconn.Listen(1 << 20)
	return &listener{Listener: l, target: "passthrough:///bufnet", dial: []grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return l.DialContext(ctx) }),
	}}
}

func serve(t testing.TB, l *listener, srv *grpc.Server) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Stop()
		wg.Wait()
	})
}

// idemEnv is an in-process idem: memory store and server, reached either
// in-process (Local) or over the network (*client.Client).
type idemEnv struct {
	store  *memory.Store
	server *server.Service
	svc    client.Service
	client *client.Client // nil for Local
	// reserves counts Reserve RPCs that reached the idem server.
	reserves atomic.Int64
}

type idemConfig struct {
	remote      bool
	tcp         bool
	clock       clockwork.Clock
	clientOpts  []client.Option
	serverExtra []grpc.UnaryServerInterceptor
}

func startIdem(t testing.TB, cfg idemConfig) *idemEnv {
	t.Helper()
	clk := cfg.clock
	if clk == nil {
		clk = clockwork.NewRealClock()
	}
	store := memory.New(memory.WithClock(clk), memory.WithLogger(quiet))
	srv, err := server.New(store, server.WithClock(clk), server.WithLogger(quiet))
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	e := &idemEnv{store: store, server: srv}
	t.Cleanup(func() {
		srv.Close()
		store.Close()
	})
	if !cfg.remote {
		e.svc = client.Local(srv)
		return e
	}
	l := listen(t, cfg.tcp)
	count := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if info.FullMethod == "/idem.v1.IdempotencyService/Reserve" {
			e.reserves.Add(1)
		}
		return h(ctx, req)
	}
	// idemd's own gRPC server (codec, message limits), so remote and Local
	// answers can be compared.
	gs := server.NewGRPCServer(srv, grpc.ChainUnaryInterceptor(append([]grpc.UnaryServerInterceptor{count}, cfg.serverExtra...)...))
	serve(t, l, gs)
	opts := append([]client.Option{client.WithInsecure(), client.WithDialOptions(l.dial...)}, cfg.clientOpts...)
	c, err := client.New(l.target, opts...)
	if err != nil {
		t.Fatalf("client.New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	e.svc, e.client = c, c
	return e
}

// testService is the business service behind the interceptors. By default
// its unary handler answers "resp-N" where N counts the handler's runs, so a
// replay is visible as an old N.
type testService struct {
	testgrpc.UnimplementedTestServiceServer
	calls  atomic.Int64
	unary  func(ctx context.Context, n int64, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error)
	output func(n int64, req *testgrpc.StreamingOutputCallRequest, ss grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error

	mu   sync.Mutex
	seen []string // bodies the streaming-input and duplex handlers processed
}

func (s *testService) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	n := s.calls.Add(1)
	if s.unary != nil {
		return s.unary(ctx, n, req)
	}
	return &testgrpc.SimpleResponse{Payload: &testgrpc.Payload{Body: fmt.Appendf(nil, "resp-%d", n)}}, nil
}

func (s *testService) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, ss grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
	n := s.calls.Add(1)
	if s.output != nil {
		return s.output(n, req, ss)
	}
	for i := range req.GetResponseParameters() {
		if err := ss.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: fmt.Appendf(nil, "run-%d-msg-%d", n, i)}}); err != nil {
			return err
		}
	}
	return nil
}

func (s *testService) StreamingInputCall(ss grpc.ClientStreamingServer[testgrpc.StreamingInputCallRequest, testgrpc.StreamingInputCallResponse]) error {
	s.calls.Add(1)
	var size int32
	for {
		req, err := ss.Recv()
		if err != nil {
			if err.Error() == "EOF" {
				return ss.SendAndClose(&testgrpc.StreamingInputCallResponse{AggregatedPayloadSize: size})
			}
			return err
		}
		s.mu.Lock()
		s.seen = append(s.seen, string(req.GetPayload().GetBody()))
		s.mu.Unlock()
		size += int32(len(req.GetPayload().GetBody()))
	}
}

func (s *testService) FullDuplexCall(ss grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
	s.calls.Add(1)
	for {
		req, err := ss.Recv()
		if err != nil {
			if err.Error() == "EOF" {
				return nil
			}
			return err
		}
		body := string(req.GetPayload().GetBody())
		tok, _ := client.TokenFromContext(ss.Context())
		s.mu.Lock()
		s.seen = append(s.seen, body)
		s.mu.Unlock()
		if err := ss.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: fmt.Appendf(nil, "%s@%d", body, tok)}}); err != nil {
			return err
		}
	}
}

func (s *testService) seenBodies() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...)
}

type appEnv struct {
	idem     *idemEnv
	ts       *testService
	tc       testgrpc.TestServiceClient
	counters *client.Counters
	events   chan client.Event
}

type appConfig struct {
	tcp       bool
	idem      idemConfig
	ts        *testService
	opts      []client.InterceptorOption
	noKeys    bool // no client interceptor: calls carry no key
	clientOps []client.ClientInterceptorOption
}

// startApp runs the test service behind recovery and the idem interceptors,
// in that order (recovery outside), and connects to it.
func startApp(t testing.TB, cfg appConfig) *appEnv {
	t.Helper()
	return startAppWith(t, cfg, nil)
}

// startAppWith is startApp with the interceptors using svc instead of a
// fresh idem.
func startAppWith(t testing.TB, cfg appConfig, svc client.Service) *appEnv {
	t.Helper()
	ie := &idemEnv{svc: svc}
	if svc == nil {
		ie = startIdem(t, cfg.idem)
	}
	ts := cfg.ts
	if ts == nil {
		ts = &testService{}
	}
	a := &appEnv{idem: ie, ts: ts, counters: &client.Counters{}, events: make(chan client.Event, 100)}
	opts := append([]client.InterceptorOption{
		client.WithLogger(quiet),
		client.WithCounters(a.counters),
		client.WithEventHook(func(_ context.Context, e client.Event) {
			select {
			case a.events <- e:
			default:
			}
		}),
	}, cfg.opts...)
	rec := recovery.WithRecoveryHandler(func(p any) error { return status.Errorf(codes.Internal, "panic: %v", p) })
	gs := grpc.NewServer(
		grpc.ChainUnaryInterceptor(recovery.UnaryServerInterceptor(rec), client.UnaryServerInterceptor(ie.svc, opts...)),
		grpc.ChainStreamInterceptor(recovery.StreamServerInterceptor(rec), client.StreamServerInterceptor(ie.svc, opts...)),
	)
	testgrpc.RegisterTestServiceServer(gs, ts)
	l := listen(t, cfg.tcp)
	serve(t, l, gs)
	dial := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, l.dial...)
	if !cfg.noKeys {
		dial = append(dial,
			grpc.WithChainUnaryInterceptor(client.UnaryClientInterceptor(cfg.clientOps...)),
			grpc.WithChainStreamInterceptor(client.StreamClientInterceptor(cfg.clientOps...)))
	}
	conn, err := grpc.NewClient(l.target, dial...)
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	a.tc = testgrpc.NewTestServiceClient(conn)
	return a
}

func unaryReq(body string) *testgrpc.SimpleRequest {
	return &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte(body)}}
}

// call makes one unary call with key and returns the response body, the
// error and whether the answer was replayed.
func (a *appEnv) call(ctx context.Context, key string, req *testgrpc.SimpleRequest) (string, error, bool) {
	var hdr metadata.MD
	if key != "" {
		ctx = client.WithKey(ctx, key)
	}
	resp, err := a.tc.UnaryCall(ctx, req, grpc.Header(&hdr))
	replayed := len(hdr.Get(client.ReplayedHeader)) > 0 && hdr.Get(client.ReplayedHeader)[0] == "true"
	return string(resp.GetPayload().GetBody()), err, replayed
}
