package idemd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/server/observe"
	"github.com/idemhq/idem/storage"
)

// Extension adds a feature to idemd (authentication, tracing, an audit
// log): its own flags, and at start-up options for the Service and the
// gRPC server.
type Extension interface {
	// RegisterFlags adds the extension's flags; they are read from the
	// environment like idemd's own.
	RegisterFlags(fs *flag.FlagSet)
	// Setup runs once the store is open, before the server starts. It adds
	// to s; an error stops idemd with exit code 2.
	Setup(ctx context.Context, s *Setup) error
}

// Setup is what extensions contribute to the server being started.
type Setup struct {
	Config Config
	// ListenAddr is the address the gRPC listener is bound to: what
	// Config.Listen resolved to (a host name may resolve anywhere).
	ListenAddr net.Addr
	Logger     *slog.Logger
	Store      storage.Store
	// Metrics is the registry /metrics serves, or nil when metrics are off.
	Metrics *prometheus.Registry
	// Observe holds idem's metrics (Observe.Metrics) and the gRPC server
	// metrics, registered in Metrics; nil when metrics are off. Its RPC
	// interceptors are already in place: do not add them again.
	Observe *observe.Registry
	// Dialect is what the store reports of its server (postgres,
	// cockroachdb), empty for stores without one.
	Dialect string

	// ServiceOptions are passed to server.New after idemd's own, so an
	// extension may override them (e.g. server.WithTenantFunc).
	ServiceOptions []server.Option
	// ServerOptions are passed to grpc.NewServer (e.g. TLS credentials).
	ServerOptions []grpc.ServerOption
	// Interceptors run inside the metrics interceptor, in the order added.
	UnaryInterceptors  []grpc.UnaryServerInterceptor
	StreamInterceptors []grpc.StreamServerInterceptor
	// Started run once the server serves; Shutdown run after it stopped,
	// before the store is closed.
	Started  []func(svc *server.Service, srv *grpc.Server)
	Shutdown []func(ctx context.Context) error
}

var (
	extMu      sync.Mutex
	extensions []Extension
)

// RegisterExtension adds an extension to every idemd started afterwards.
// Extension packages call it from init; cmd/idemd imports them.
func RegisterExtension(e Extension) {
	extMu.Lock()
	defer extMu.Unlock()
	extensions = append(extensions, e)
}

func registeredExtensions() []Extension {
	extMu.Lock()
	defer extMu.Unlock()
	return append([]Extension(nil), extensions...)
}

// startError is a failure before serving (bad configuration, a store that
// cannot be opened, an address in use): exit code 2.
type startError struct{ err error }

func (e *startError) Error() string { return e.err.Error() }
func (e *startError) Unwrap() error { return e.err }

func startErr(format string, args ...any) error {
	return &startError{fmt.Errorf(format, args...)}
}

// maxHeaderListBytes bounds the request metadata of one call (HTTP/2
// SETTINGS_MAX_HEADER_LIST_SIZE). gRPC-go's default is 16 MiB, decoded
// before authentication runs and kept while the handler waits for the
// request message, on each of up to --max-streams calls of a connection.
// idemd's calls carry a bearer token, a trace context and an idempotency
// key: far below this.
const maxHeaderListBytes = 64 << 10

// metricsIdleTimeout is how long the metrics server keeps an idle
// keep-alive connection (a scrape every 15–60 s reuses it).
var metricsIdleTimeout = 2 * time.Minute

// grpcMaxConnectionIdle is how long a client connection without a call
// stays open before idemd sends GOAWAY (the client reconnects at its next
// call).
var grpcMaxConnectionIdle = 15 * time.Minute

// stuckHandlerGrace is how long shutdown waits, after cutting calls off,
// for handlers that ignore their canceled context.
const stuckHandlerGrace = time.Second

// secondSignalGrace is how long in-flight calls may still finish after a
// second signal that came during the shutdown delay, before they are cut
// off.
const secondSignalGrace = 50 * time.Millisecond

// Serve runs idemd until ctx ends, then shuts down gracefully: the health
// service turns NOT_SERVING, the listener stops accepting, in-flight calls
// drain for up to ShutdownTimeout before they are cut off, and the store
// is closed. Errors before serving are start errors (exit code 2).
func Serve(ctx context.Context, cfg Config, log *slog.Logger, exts ...Extension) error {
	if err := cfg.Validate(); err != nil {
		return &startError{err}
	}
	limits, _ := cfg.Limits()

	if cfg.Migrate {
		if err := migrateAll(ctx, cfg, exts, log); err != nil {
			return &startError{err}
		}
	}
	store, err := storage.Open(ctx, cfg.Store, storage.OpenOptions{Logger: log})
	if err != nil {
		return startErr("cannot open store %s: %s", storage.Redacted(cfg.Store), trimIdem(err))
	}
	storeOpen := true
	defer func() {
		if storeOpen {
			_ = store.Close()
		}
	}()

	lis, err := listen(cfg.Listen)
	if err != nil {
		return startErr("cannot listen on %s: %v", cfg.Listen, err)
	}
	defer lis.Close()

	setup := &Setup{Config: cfg, ListenAddr: lis.Addr(), Logger: log, Store: store, Dialect: storeDialect(store)}
	scheme := StoreScheme(cfg.Store)
	var reg *observe.Registry
	var metricsLis net.Listener
	if cfg.MetricsListen != "" {
		reg = observe.NewRegistry()
		setup.Metrics, setup.Observe = reg.Registry, reg
		reg.MustRegister(storeInfo(scheme, setup.Dialect))
		// Only with metrics on: the wrapper costs two clock reads a call.
		setup.Store = observe.InstrumentStore(scheme, store, reg.Metrics)
		if metricsLis, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			return startErr("cannot listen on %s for metrics: %v", cfg.MetricsListen, err)
		}
		defer metricsLis.Close()
	}
	// Until shutdown runs them, a failed start still runs the Shutdown
	// hooks registered so far: an embedding program lives on, and an
	// extension's stores, files and goroutines must not.
	hooksRun := false
	defer func() {
		if hooksRun {
			return
		}
		hctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		runShutdownHooks(hctx, setup.Shutdown, log)
	}()
	for _, e := range exts {
		if err := e.Setup(ctx, setup); err != nil {
			return startErr("%s", trimIdem(err))
		}
	}

	opts := append([]server.Option{
		server.WithLogger(log),
		server.WithLimits(limits),
		server.WithNamespacePolicies(cfg.Policies),
		server.WithHealthCheck(cfg.HealthInterval, 0),
		server.WithStoreTimeout(cfg.StoreTimeout),
	}, setup.ServiceOptions...)
	svc, err := server.New(setup.Store, opts...)
	if err != nil {
		return startErr("%s", trimIdem(err))
	}
	defer svc.Close()

	unary, stream := setup.UnaryInterceptors, setup.StreamInterceptors
	if reg != nil {
		unary = append([]grpc.UnaryServerInterceptor{reg.UnaryServerInterceptor()}, unary...)
		stream = append([]grpc.StreamServerInterceptor{reg.StreamServerInterceptor()}, stream...)
	}
	if setup.Dialect != "" {
		unary = append(unary, dialectHeader(setup.Dialect))
	}
	streams := uint32(math.MaxUint32)
	if cfg.MaxStreams > 0 {
		streams = uint32(min(cfg.MaxStreams, math.MaxUint32))
	}
	gopts := append([]grpc.ServerOption{grpc.ChainUnaryInterceptor(unary...), grpc.ChainStreamInterceptor(stream...),
		grpc.MaxConcurrentStreams(streams), grpc.MaxHeaderListSize(maxHeaderListBytes),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: grpcMaxConnectionIdle})}, setup.ServerOptions...)
	gs := server.NewGRPCServer(svc, gopts...)

	var httpSrv *http.Server
	errc := make(chan error, 2)
	if reg != nil {
		reg.InitializeMetrics(gs)
		mux := http.NewServeMux()
		mux.Handle("/metrics", reg.Handler())
		// Without IdleTimeout (or ReadTimeout) net/http waits for a kept-alive
		// connection's next request with no deadline: every idle client
		// would hold a goroutine and a file descriptor, which the gRPC
		// listener needs too. WriteTimeout bounds a scraper that does not read.
		httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout: metricsIdleTimeout, WriteTimeout: time.Minute, MaxHeaderBytes: 64 << 10}
		go func() {
			if err := httpSrv.Serve(metricsLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("metrics server: %w", err)
			}
		}()
	}
	go func() {
		if err := gs.Serve(lis); err != nil {
			errc <- fmt.Errorf("grpc server: %w", err)
		}
	}()
	for _, f := range setup.Started {
		f(svc, gs)
	}
	// The limits in force, as extensions may have changed them.
	l := svc.Limits()
	attrs := []any{"addr", lis.Addr().String(), "store", storage.Redacted(cfg.Store), "version", Version(),
		"default_lease", l.DefaultLease.String(), "max_lease", l.MaxLease.String(),
		"default_retention", l.DefaultRetention.String(), "max_retention", l.MaxRetention.String(),
		"max_result_bytes", l.MaxResultBytes, "store_timeout", cfg.StoreTimeout.String(), "max_streams", cfg.MaxStreams}
	if setup.Dialect != "" {
		attrs = append(attrs, "dialect", setup.Dialect)
	}
	if metricsLis != nil {
		attrs = append(attrs, "metrics_addr", metricsLis.Addr().String())
	}
	warnUnknownEnv(log, cfg)
	if metricsLis != nil && !loopback(metricsLis.Addr()) {
		log.Warn("/metrics is served without TLS or authentication on a reachable address; its series name every tenant's namespaces: let only the scraper reach it",
			"metrics_addr", metricsLis.Addr().String())
	}
	log.Info("idemd serving", attrs...)

	// A second SIGTERM or interrupt cuts the delay and the drain short;
	// the store is still closed cleanly. (main's NotifyContext keeps
	// catching it, so without this it did nothing.)
	again := make(chan os.Signal, 1)
	var serveErr error
	// secondSignal: a second signal came during the delay, so the drain
	// is cut short too (an operator's second ^C means "stop now").
	secondSignal := false
	select {
	case <-ctx.Done():
		signal.Notify(again, syscall.SIGTERM, os.Interrupt)
		if cfg.ShutdownDelay > 0 {
			// Endpoints and load balancers learn of the stop a moment
			// after the signal; until they do, new calls keep coming.
			svc.Drain()
			log.Info("idemd draining: NOT_SERVING, still serving", "delay", cfg.ShutdownDelay.String())
			select {
			case <-time.After(cfg.ShutdownDelay):
			case <-again:
				log.Warn("second signal; shutting down without the rest of the delay")
				secondSignal = true
			}
		}
		log.Info("idemd shutting down", "timeout", cfg.ShutdownTimeout.String())
	case serveErr = <-errc:
		signal.Notify(again, syscall.SIGTERM, os.Interrupt)
		log.Error("idemd stopping", "err", serveErr)
	}
	defer signal.Stop(again)

	// One deadline for the whole shutdown, so that idemd exits about
	// ShutdownDelay + ShutdownTimeout after the signal, as
	// terminationGracePeriodSeconds in deploy/ assumes.
	deadline := time.Now().Add(cfg.ShutdownTimeout)

	// NOT_SERVING first, so load balancers move away while calls drain.
	svc.Close()
	drained := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(drained)
	}()
	// After a second signal during the delay, calls still running are cut
	// off at once: the moment's grace lets an idle server's GracefulStop
	// return, so that only real calls are reported cut off.
	grace := cfg.ShutdownTimeout
	if secondSignal {
		grace = secondSignalGrace
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	cutOff := false
	select {
	case <-drained:
	case <-timer.C:
		if secondSignal {
			log.Warn("second signal; cutting in-flight calls off")
		} else {
			log.Warn("in-flight calls did not finish in time; cutting them off", "timeout", cfg.ShutdownTimeout.String())
		}
		cutOff = true
	case <-again:
		log.Warn("second signal; cutting in-flight calls off")
		cutOff = true
	}
	if cutOff {
		gs.Stop()
		// Stop cancels the calls' contexts; a handler that ignores its
		// context must still not keep idemd from exiting.
		select {
		case <-drained:
		case <-time.After(stuckHandlerGrace):
			log.Error("calls still running after the server stopped; closing the store under them")
		}
	}
	// What is left of the deadline, but enough for a flush even when the
	// drain used it all.
	shutdownCtx, cancel := context.WithDeadline(context.Background(), later(deadline, time.Now().Add(stuckHandlerGrace)))
	defer cancel()
	if httpSrv != nil {
		_ = httpSrv.Shutdown(shutdownCtx)
	}
	hooksRun = true
	runShutdownHooks(shutdownCtx, setup.Shutdown, log)
	storeOpen = false
	if err := store.Close(); err != nil {
		log.Error("closing the store failed", "err", err)
		serveErr = errors.Join(serveErr, fmt.Errorf("closing the store: %w", err))
	}
	log.Info("idemd stopped")
	return serveErr
}

// runShutdownHooks runs the extensions' Shutdown hooks, logging failures.
func runShutdownHooks(ctx context.Context, hooks []func(context.Context) error, log *slog.Logger) {
	for _, f := range hooks {
		if err := f(ctx); err != nil {
			log.Warn("extension shutdown failed", "err", err)
		}
	}
}

// listen opens the gRPC listener: TCP, or a unix socket for "unix:PATH"
// and "unix://PATH", as gRPC and idemctl name them.
func listen(addr string) (net.Listener, error) {
	path, ok := strings.CutPrefix(addr, "unix:")
	if !ok {
		return net.Listen("tcp", addr)
	}
	path = strings.TrimPrefix(path, "//")
	if path == "" {
		return nil, errors.New("unix socket address names no path")
	}
	lis, err := net.Listen("unix", path)
	if !errors.Is(err, syscall.EADDRINUSE) {
		return lis, err
	}
	// The socket file of an idemd that was killed stays behind and would
	// keep every restart from listening; take it over only when nothing
	// answers on it, never from a live server.
	c, derr := net.DialTimeout("unix", path, time.Second)
	if derr == nil {
		c.Close()
		return nil, err
	}
	// Connecting to a file that is no socket is refused too: never remove one.
	if fi, serr := os.Lstat(path); serr != nil || fi.Mode().Type() != os.ModeSocket ||
		!errors.Is(derr, syscall.ECONNREFUSED) || os.Remove(path) != nil {
		return nil, err
	}
	return net.Listen("unix", path)
}

// loopback reports whether a bound address is reachable only from this
// machine: a unix socket or a loopback IP (not the unspecified address).
func loopback(a net.Addr) bool {
	switch a := a.(type) {
	case *net.UnixAddr:
		return true
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	}
	return false
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// StoreScheme is the store label of metrics: the kind of store its URL
// opens, so that postgresql:// and rediss:// count with postgres:// and
// redis://.
func StoreScheme(storeURL string) string {
	u, err := url.Parse(storeURL)
	if err != nil {
		return "unknown"
	}
	switch s := strings.ToLower(u.Scheme); s {
	case "postgresql":
		return "postgres"
	case "rediss":
		return "redis"
	default:
		return s
	}
}

// storeDialect is what a SQL store detected of its server at connect.
func storeDialect(s storage.Store) string {
	if d, ok := s.(interface{ Dialect() string }); ok {
		return d.Dialect()
	}
	return ""
}

// storeInfo is the constant gauge idem_store_info{store,dialect} = 1, so
// dashboards show which database a replica talks to.
func storeInfo(scheme, dialect string) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "idem_store_info",
		Help:        "The store this idemd serves from: URL scheme and, for SQL stores, the database dialect detected at connect.",
		ConstLabels: prometheus.Labels{"store": scheme, "dialect": dialect},
	})
	g.Set(1)
	return g
}

// DialectHeader is the response header of Lookup naming the SQL dialect of
// the store, for operators checking what a replica talks to.
const DialectHeader = "idem-store-dialect"

// dialectHeader sets DialectHeader on Lookup responses; it is the innermost
// interceptor, so refused calls do not get it.
func dialectHeader(dialect string) grpc.UnaryServerInterceptor {
	md := metadata.Pairs(DialectHeader, dialect)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if info.FullMethod == idemv1.IdempotencyService_Lookup_FullMethodName {
			_ = grpc.SetHeader(ctx, md)
		}
		return h(ctx, req)
	}
}
