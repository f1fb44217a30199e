package ctl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/idemhq/idem/client"
)

// Exit codes. reserve exits 0 only for RESERVED, so that
// `idemctl reserve NS KEY && work` never does the work twice; its other
// outcomes have codes of their own.
const (
	ExitOK          = 0
	ExitFailed      = 1
	ExitUsage       = 2
	ExitUnreachable = 3
	ExitCredentials = 4
	ExitCompleted   = 5 // reserve: COMPLETED, the result is printed
	ExitInProgress  = 6 // reserve: IN_PROGRESS, another caller holds the key
	ExitMismatch    = 7 // reserve: MISMATCH, the key is another request's
)

// Env is what Main needs from the process.
type Env struct {
	Stdout, Stderr io.Writer
	// LookupEnv reads environment variables (os.LookupEnv).
	LookupEnv func(string) (string, bool)
	// StderrIsTTY turns bench's live progress on by default.
	StderrIsTTY bool
}

// DefaultAddr is where idemctl looks for idemd without --addr or IDEM_ADDR.
const DefaultAddr = "127.0.0.1:50051"

type globals struct {
	addr     string
	tlsCA    string
	tlsCert  string
	tlsKey   string
	insecure optBool
	token    string
	tenant   string
	output   string
	timeout  time.Duration

	// envCert and envKey are IDEM_TLS_CERT and IDEM_TLS_KEY as read from
	// the environment: in idemd's own container they name idemd's server
	// certificate, which must not be offered as idemctl's client one.
	envCert, envKey string

	// tlsConfig is the client TLS configuration in use, nil for plaintext.
	tlsConfig *tls.Config
}

// optBool is a boolean flag that remembers whether it was given, so
// --insecure=false can force TLS on a loopback address.
type optBool struct{ set, v bool }

func (b *optBool) String() string   { return strconv.FormatBool(b.v) }
func (b *optBool) IsBoolFlag() bool { return true }
func (b *optBool) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	b.set, b.v = true, v
	return nil
}

func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.addr, "addr", g.addr, "idemd address host:port (env IDEM_ADDR)")
	fs.StringVar(&g.tlsCA, "tls-ca", g.tlsCA, "PEM file of the CA that signed idemd's certificate (env IDEM_TLS_CA; default: system roots)")
	fs.StringVar(&g.tlsCert, "tls-cert", g.tlsCert, "PEM client certificate for mutual TLS (env IDEM_TLS_CERT)")
	fs.StringVar(&g.tlsKey, "tls-key", g.tlsKey, "PEM key of --tls-cert (env IDEM_TLS_KEY)")
	fs.Var(&g.insecure, "insecure", "plaintext connection (default: plaintext for loopback addresses, TLS otherwise)")
	fs.StringVar(&g.token, "token", g.token, "bearer token (env IDEM_TOKEN)")
	fs.StringVar(&g.tenant, "tenant", g.tenant, "tenant to act for (env IDEM_TENANT; with authentication, the credential's tenant)")
	fs.StringVar(&g.output, "o", g.output, "output format: table or json")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "deadline of each call")
}

func (g *globals) check() error {
	var errs []error
	if g.output != "table" && g.output != "json" {
		errs = append(errs, fmt.Errorf("-o %q: want table or json", g.output))
	}
	if g.timeout <= 0 {
		errs = append(errs, fmt.Errorf("--timeout %v: must be positive", g.timeout))
	}
	if g.insecure.set && g.insecure.v && (g.tlsCA != "" || g.tlsCert != "" || g.tlsKey != "") {
		// Silently dropping TLS would send the bearer token in clear.
		errs = append(errs, errors.New("--insecure excludes --tls-ca, --tls-cert and --tls-key (also set by IDEM_TLS_*)"))
	}
	if (g.tlsCert == "") != (g.tlsKey == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key go together"))
	}
	if g.addr == "" {
		errs = append(errs, errors.New("--addr is empty"))
	}
	if err := validText("--tenant", g.tenant); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// plaintext reports whether to dial without TLS.
func (g *globals) plaintext() bool {
	if g.insecure.set {
		return g.insecure.v
	}
	if g.tlsCA != "" || g.tlsCert != "" {
		return false
	}
	return isLoopback(g.addr)
}

func isLoopback(addr string) bool {
	if strings.HasPrefix(addr, "unix:") || strings.HasPrefix(addr, "unix-abstract:") {
		return true
	}
	if _, rest, ok := strings.Cut(addr, ":///"); ok {
		addr = rest
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

func (g *globals) clientOptions() ([]client.Option, error) {
	// The CLI reports failures as they are: no retries, no breaker.
	opts := []client.Option{client.WithRetry(1, 0, 0), client.WithoutBreaker()}
	if g.plaintext() {
		opts = append(opts, client.WithInsecure())
	} else {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if g.tlsCA != "" {
			pem, err := os.ReadFile(g.tlsCA)
			if err != nil {
				return nil, fmt.Errorf("--tls-ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", g.tlsCA)
			}
			cfg.RootCAs = pool
		}
		if g.tlsCert != "" {
			cert, err := tls.LoadX509KeyPair(g.tlsCert, g.tlsKey)
			if err != nil {
				return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
			}
			// A certificate from the environment whose extended key usage
			// excludes client authentication is a server's: in idemd's
			// container IDEM_TLS_CERT/IDEM_TLS_KEY are idemd's own (docs:
			// the exec probe), and idemd would refuse it as a client
			// certificate. Connect without one, as with none given.
			fromEnv := g.tlsCert == g.envCert && g.tlsKey == g.envKey
			if !fromEnv || clientAuthUsable(cert) {
				cfg.Certificates = []tls.Certificate{cert}
			}
		}
		g.tlsConfig = cfg
		opts = append(opts, client.WithTLSConfig(cfg.Clone()))
	}
	// A token read from a file or a Secret often ends in a newline, which
	// gRPC refuses in a header.
	if tok := strings.TrimRight(g.token, "\r\n"); tok != "" {
		opts = append(opts, client.WithBearerToken(tok))
	}
	return opts, nil
}

// clientAuthUsable reports whether cert's leaf may authenticate a TLS
// client: no extended key usage, or one naming client auth or any.
func clientAuthUsable(cert tls.Certificate) bool {
	leaf := cert.Leaf
	if leaf == nil {
		if len(cert.Certificate) == 0 {
			return false
		}
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return true // let the handshake say what is wrong with it
		}
	}
	if len(leaf.ExtKeyUsage) == 0 && len(leaf.UnknownExtKeyUsage) == 0 {
		return true
	}
	return slices.ContainsFunc(leaf.ExtKeyUsage, func(u x509.ExtKeyUsage) bool {
		return u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny
	})
}

func (g *globals) dial() (*client.Client, error) {
	opts, err := g.clientOptions()
	if err != nil {
		return nil, err
	}
	return client.New(g.addr, opts...)
}

// usageError is bad usage: exit 2.
type usageError struct{ error }

// exitStatus ends a command with its code and no message: the command's
// output already said why (reserve's outcome).
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// timeoutError is a call that ran out of idemctl's own deadline (--timeout,
// plus --wait for reserve), as opposed to a DEADLINE_EXCEEDED the server
// answered.
type timeoutError struct {
	err  error
	wait time.Duration
}

func (e timeoutError) Error() string { return e.err.Error() }
func (e timeoutError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// command is one subcommand.
type command struct {
	name    string
	args    string // positional arguments, for usage
	summary string
	exits   string // the command's own exit codes, for its usage
	flags   func(fs *flag.FlagSet) any
	run     func(ctx context.Context, r *invocation, pos []string, opts any) error
}

// invocation is one run of a command.
type invocation struct {
	g    *globals
	env  Env
	cl   *client.Client
	conn *grpc.ClientConn
	// missing describes the record a NOT_FOUND is about.
	missing string
}

func (r *invocation) connect() error {
	if r.cl != nil {
		return nil
	}
	cl, err := r.g.dial()
	if err != nil {
		return err
	}
	r.cl, r.conn = cl, cl.Conn()
	return nil
}

func (r *invocation) close() {
	if r.cl != nil {
		r.cl.Close()
	}
}

// Main runs idemctl with args (without the program name) and returns the exit code.
func Main(ctx context.Context, args []string, env Env) int {
	if env.LookupEnv == nil {
		env.LookupEnv = func(string) (string, bool) { return "", false }
	}
	g := &globals{addr: DefaultAddr, output: "table", timeout: 10 * time.Second}
	if v, ok := env.LookupEnv("IDEM_ADDR"); ok && v != "" {
		g.addr = v
	}
	for name, p := range map[string]*string{"IDEM_TOKEN": &g.token, "IDEM_TENANT": &g.tenant,
		"IDEM_TLS_CA": &g.tlsCA, "IDEM_TLS_CERT": &g.tlsCert, "IDEM_TLS_KEY": &g.tlsKey} {
		if v, ok := env.LookupEnv(name); ok {
			*p = v
		}
	}
	g.envCert, g.envKey = g.tlsCert, g.tlsKey
	fs := flag.NewFlagSet("idemctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			mainUsage(env.Stdout, fs)
			return ExitOK
		}
		return usageFail(env, "", err)
	}
	if fs.NArg() == 0 {
		mainUsage(env.Stderr, fs)
		return ExitUsage
	}
	name, rest := fs.Arg(0), fs.Args()[1:]
	if name == "help" {
		if len(rest) == 0 {
			mainUsage(env.Stdout, fs)
			return ExitOK
		}
		// "idemctl help reserve" is "idemctl reserve -h".
		name, rest = rest[0], []string{"-h"}
	}
	i := slices.IndexFunc(commands, func(c command) bool { return c.name == name })
	if i < 0 {
		return usageFail(env, "", fmt.Errorf("unknown command %q", name))
	}
	cmd := commands[i]
	cfs := flag.NewFlagSet("idemctl "+cmd.name, flag.ContinueOnError)
	cfs.SetOutput(io.Discard)
	g.register(cfs)
	var opts any
	if cmd.flags != nil {
		opts = cmd.flags(cfs)
	}
	pos, err := parseInterspersed(cfs, rest)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			cmdUsage(env.Stdout, cmd, cfs)
			return ExitOK
		}
		return usageFail(env, cmd.name, err)
	}
	if err := g.check(); err != nil {
		return usageFail(env, cmd.name, err)
	}
	r := &invocation{g: g, env: env}
	defer r.close()
	if err := cmd.run(ctx, r, pos, opts); err != nil {
		return r.report(cmd.name, err)
	}
	return ExitOK
}

func usageFail(env Env, cmd string, err error) int {
	fmt.Fprintf(env.Stderr, "idemctl: %v\n", err)
	if cmd == "" {
		fmt.Fprintln(env.Stderr, "Run 'idemctl -h' for usage.")
	} else {
		fmt.Fprintf(env.Stderr, "Run 'idemctl %s -h' for usage.\n", cmd)
	}
	return ExitUsage
}

// parseInterspersed lets flags come before, between and after positional
// arguments, as operators type them; "--" ends the flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var tail []string
	if i := slices.Index(args, "--"); i >= 0 {
		args, tail = args[:i], args[i+1:]
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return append(pos, tail...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// report turns a command's error into one line on stderr and an exit code.
func (r *invocation) report(cmd string, err error) int {
	var ue usageError
	if errors.As(err, &ue) {
		return usageFail(r.env, cmd, ue.error)
	}
	var es exitStatus
	if errors.As(err, &es) {
		return int(es)
	}
	code, line := r.classify(err)
	fmt.Fprintf(r.env.Stderr, "idemctl: %s\n", line)
	return code
}

func (r *invocation) classify(err error) (int, string) {
	if errors.Is(err, context.Canceled) {
		return ExitFailed, "interrupted"
	}
	notReady := r.conn != nil && r.conn.GetState() != connectivity.Ready
	var te timeoutError
	if errors.As(err, &te) {
		within := fmt.Sprintf("--timeout %v", r.g.timeout)
		if te.wait > 0 {
			within += fmt.Sprintf(" and --wait %v", te.wait)
		}
		if notReady {
			return ExitUnreachable, fmt.Sprintf("cannot reach idem at %s: no connection within %s", r.g.addr, within)
		}
		// A large store's Stats or List page can take longer than the
		// default 10s: say whose deadline it was and what to change.
		return ExitFailed, fmt.Sprintf("idem at %s did not answer within %s; raise --timeout", r.g.addr, within)
	}
	st, ok := status.FromError(err)
	if !ok {
		return ExitFailed, err.Error()
	}
	msg := st.Message()
	switch st.Code() {
	case codes.Unavailable:
		// The server refused our certificate (or its absence); a server
		// certificate we do not trust is a connection problem, below.
		if strings.Contains(msg, "remote error: tls:") {
			return ExitCredentials, "credentials refused: " + msg
		}
		// With TLS 1.3 the server rejects a client certificate after the
		// client's side of the handshake is done, so the call may fail with
		// a bare broken pipe; one more handshake, waiting for the server's
		// first bytes, shows the alert.
		if alert := r.g.tlsAlert(); alert != nil {
			return ExitCredentials, "credentials refused: " + alert.Error()
		}
		if notReady || strings.Contains(msg, "connection error") {
			line := fmt.Sprintf("cannot reach idem at %s: %s", r.g.addr, msg)
			// A TLS server hangs up on a plaintext HTTP/2 preface; without
			// the hint that reads as an idemd that is down.
			if r.g.plaintext() && strings.Contains(msg, "server preface") {
				line += " (is idemd serving TLS? give --tls-ca, or --tls-cert and --tls-key)"
			}
			return ExitUnreachable, line
		}
	case codes.DeadlineExceeded:
		if notReady {
			return ExitUnreachable, fmt.Sprintf("cannot reach idem at %s: no connection within %v", r.g.addr, r.g.timeout)
		}
	case codes.Unauthenticated, codes.PermissionDenied:
		return ExitCredentials, "credentials refused: " + msg
	case codes.NotFound:
		if r.missing != "" {
			return ExitFailed, "no record " + r.missing
		}
	}
	return ExitFailed, fmt.Sprintf("%s: %s", st.Code(), msg)
}

// tlsAlert dials the server over TLS as the client does and returns the
// TLS alert the server sends, if any.
func (g *globals) tlsAlert() error {
	if g.tlsConfig == nil {
		return nil
	}
	cfg := g.tlsConfig.Clone()
	cfg.NextProtos = []string{"h2"}
	addr := g.addr
	if _, rest, ok := strings.Cut(addr, ":///"); ok {
		addr = rest
	}
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil
		}
		cfg.ServerName = host
	}
	d := &net.Dialer{Timeout: 2 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err == nil {
		defer conn.Close()
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		// An accepting HTTP/2 server sends its SETTINGS frame first.
		_, err = conn.Read(make([]byte, 1))
	}
	if err != nil && strings.Contains(err.Error(), "remote error: tls:") {
		return err
	}
	return nil
}

// ping checks that conn reaches a gRPC server, with the transport's own
// error (connection refused, handshake failure) when it does not. A server
// without the health service is reachable all the same.
func ping(ctx context.Context, conn *grpc.ClientConn) error {
	_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if status.Code(err) == codes.Unimplemented {
		return nil
	}
	return err
}
