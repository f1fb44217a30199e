package idemdext

import (
	"context"
	"flag"
	"log/slog"
	"net"

	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/server/auth"
	"github.com/idemhq/idem/server/idemd"
	"github.com/idemhq/idem/server/limit"
	"github.com/idemhq/idem/server/observe"
)

func init() { idemd.RegisterExtension(New()) }

// Extension is the idemd extension; New returns one with default flags.
type Extension struct {
	auth  auth.Config
	limit limit.Config
	// logCalls turns on one log line per finished call. Off by default:
	// the line costs about a third of idemd's CPU per call (measured with
	// BenchmarkEndToEnd), which a store meant to sit on every request's
	// path should not pay unasked.
	logCalls bool
}

var _ idemd.Extension = (*Extension)(nil)

// New returns the extension with the packages' default configurations.
func New() *Extension {
	return &Extension{auth: auth.DefaultConfig(), limit: limit.DefaultConfig()}
}

// RegisterFlags adds --tls-*, --tokens-file, --insecure, … and
// --max-inflight, --tenant-rate, ….
func (e *Extension) RegisterFlags(fs *flag.FlagSet) {
	auth.RegisterFlags(fs, &e.auth)
	limit.RegisterFlags(fs, &e.limit)
	fs.BoolVar(&e.logCalls, "log-calls", e.logCalls, "log one JSON line per finished call (tenant, namespace, key hash, code, latency); on at --log-level debug; costs CPU per call")
}

// Setup refuses plaintext on a reachable address without --insecure, loads
// the credentials (reloaded until ctx ends), starts tracing and adds the
// interceptors in the order the package documentation gives.
func (e *Extension) Setup(ctx context.Context, s *idemd.Setup) error {
	if err := auth.CheckListen(s.Config.Listen, e.auth.TLS(), e.auth.Insecure); err != nil {
		return err
	}
	// What the name resolved to counts too: "localhost" may not be loopback.
	bound, tcp := s.ListenAddr.(*net.TCPAddr)
	if tcp {
		if err := auth.CheckListen(bound.String(), e.auth.TLS(), e.auth.Insecure); err != nil {
			return err
		}
	}
	if err := e.limit.Validate(); err != nil {
		return err
	}
	var m *observe.Metrics // nil-safe: metrics off
	if s.Observe != nil {
		m = s.Observe.Metrics
	}
	a, err := auth.New(e.auth, auth.WithLogger(s.Logger), auth.WithRejectHook(m.Rejected))
	if err != nil {
		return err
	}
	stop, err := observe.SetupTracing(ctx, "idemd", idemd.Version(), s.Logger)
	if err != nil {
		return err
	}
	s.Shutdown = append(s.Shutdown, stop)
	lim := limit.New(e.limit, limit.WithMetrics(m))

	logCalls := e.logCalls || s.Logger.Enabled(ctx, slog.LevelDebug)
	// The stats handler starts spans and reads the caller's trace context
	// for the call log; with neither it would only cost CPU.
	if observe.TracingEnabled() || logCalls {
		s.ServerOptions = append(s.ServerOptions, observe.StatsHandler())
	}
	s.ServerOptions = append(s.ServerOptions, a.ServerOptions()...)
	if logCalls {
		s.UnaryInterceptors = append(s.UnaryInterceptors, observe.UnaryServerInterceptor(s.Logger))
		s.StreamInterceptors = append(s.StreamInterceptors, observe.StreamServerInterceptor(s.Logger))
	}
	s.UnaryInterceptors = append(s.UnaryInterceptors,
		observe.AuditUnaryServerInterceptor(s.Logger), // outside auth: refused admin calls are audited too
		a.UnaryServerInterceptor(),
		lim.UnaryServerInterceptor())
	if m != nil {
		s.UnaryInterceptors = append(s.UnaryInterceptors, m.UnaryServerInterceptor())
	}
	s.StreamInterceptors = append(s.StreamInterceptors,
		a.StreamServerInterceptor(),
		lim.StreamServerInterceptor())
	if a.Enabled() {
		s.ServiceOptions = append(s.ServiceOptions, server.WithTenantFunc(a.TenantFunc))
	}
	if !e.auth.Enabled() && (auth.Reachable(s.Config.Listen) || tcp && auth.Reachable(bound.String())) {
		// Allowed (a NetworkPolicy may close the network), never silent:
		// every caller may name any tenant and call the admin API.
		s.Logger.WarnContext(ctx, "idemd authenticates no one on a reachable address: any caller may act for any tenant and call AdminService; give --tls-client-ca or --tokens-file, or close the network to all but trusted clients",
			"addr", s.Config.Listen, "tls", e.auth.TLS())
	}
	go a.Watch(ctx) // last: a failed Setup leaves nothing running
	return nil
}
