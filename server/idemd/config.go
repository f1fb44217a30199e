package idemd

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/idemhq/idem/server"
)

// Config is idemd's configuration.
type Config struct {
	// Listen is the gRPC address.
	Listen string
	// Store is the backend URL (pebble://PATH, memory://, postgres://…, redis://…).
	Store string
	// MetricsListen is the HTTP address serving /metrics; empty turns it off.
	MetricsListen string
	// Migrate applies the store's pending schema migrations before serving
	// (what `idemd migrate` does), for stores that have migrations.
	Migrate bool

	DefaultLease     time.Duration
	MaxLease         time.Duration
	DefaultRetention time.Duration
	MaxRetention     time.Duration
	MaxResultBytes   int
	// Policies narrow the limits per namespace.
	Policies Policies

	// GCPercent is the Go garbage collector's target (as GOGC). idemd's
	// live heap is small next to what each call allocates, so a higher
	// target than Go's 100 buys a large share of CPU for memory; set 100
	// (or GOMEMLIMIT) on machines short of memory. The GOGC environment
	// variable wins when --gc-percent and IDEM_GC_PERCENT are unset.
	GCPercent int

	LogLevel        slog.Level
	ShutdownTimeout time.Duration
	ShutdownDelay   time.Duration
	HealthInterval  time.Duration
	// StoreTimeout bounds each store operation (server.WithStoreTimeout);
	// 0 turns the bound off.
	StoreTimeout time.Duration
	// MaxStreams bounds the calls one client connection has open at once;
	// clients queue calls past it. 0 turns the bound off.
	MaxStreams uint

	// unknownEnv are IDEM_* variables that set nothing (UnknownEnv),
	// warned about at start.
	unknownEnv []string
}

// DefaultConfig is idemd's configuration without flags: loopback, the
// embedded Pebble store in ./idem-data, the limits of the design contract.
func DefaultConfig() Config {
	l := server.DefaultLimits()
	return Config{
		Listen:           "127.0.0.1:50051",
		Store:            "pebble://./idem-data",
		DefaultLease:     l.DefaultLease,
		MaxLease:         l.MaxLease,
		DefaultRetention: l.DefaultRetention,
		MaxRetention:     l.MaxRetention,
		MaxResultBytes:   l.MaxResultBytes,
		Policies:         Policies{},
		GCPercent:        400,
		LogLevel:         slog.LevelInfo,
		ShutdownTimeout:  30 * time.Second,
		HealthInterval:   5 * time.Second,
		StoreTimeout:     server.DefaultStoreTimeout,
		MaxStreams:       server.DefaultMaxStreams,
	}
}

// RegisterFlags binds c's fields to flags of fs, c's values as defaults.
func RegisterFlags(fs *flag.FlagSet, c *Config) {
	if c.Policies == nil {
		c.Policies = Policies{}
	}
	fs.StringVar(&c.Listen, "listen", c.Listen, "gRPC listen address")
	fs.StringVar(&c.Store, "store", c.Store, "store URL: pebble://PATH, memory://, postgres://…, redis://…")
	fs.StringVar(&c.MetricsListen, "metrics-listen", c.MetricsListen, "HTTP address for Prometheus /metrics (empty: off)")
	fs.BoolVar(&c.Migrate, "migrate", c.Migrate, "apply pending store schema migrations before serving (as idemd migrate)")
	fs.DurationVar(&c.DefaultLease, "default-lease", c.DefaultLease, "lease of a Reserve that names none")
	fs.DurationVar(&c.MaxLease, "max-lease", c.MaxLease, "longest lease a caller may ask for")
	fs.DurationVar(&c.DefaultRetention, "default-retention", c.DefaultRetention, "retention of a record whose call names none")
	fs.DurationVar(&c.MaxRetention, "max-retention", c.MaxRetention, "longest retention a caller may ask for")
	fs.IntVar(&c.MaxResultBytes, "max-result-bytes", c.MaxResultBytes, "largest stored result (body, message, details, metadata)")
	fs.Var(c.Policies, "namespace-policy", "per-namespace limits, repeatable or ';'-separated: NAMESPACE=default-lease=10s,max-lease=1m,default-retention=1h,max-retention=24h,max-result-bytes=4096,store-results=false")
	fs.IntVar(&c.GCPercent, "gc-percent", c.GCPercent, "Go GC target percentage (as GOGC; GOGC wins when this flag and IDEM_GC_PERCENT are unset)")
	fs.TextVar(&c.LogLevel, "log-level", c.LogLevel, "log level: debug, info, warn, error")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "how long shutdown waits for in-flight calls before cutting them off")
	fs.DurationVar(&c.ShutdownDelay, "shutdown-delay", c.ShutdownDelay, "on SIGTERM, report NOT_SERVING but go on serving this long before shutdown begins, while load balancers take the replica out")
	fs.DurationVar(&c.HealthInterval, "health-interval", c.HealthInterval, "how often the store is pinged for the health service")
	fs.DurationVar(&c.StoreTimeout, "store-timeout", c.StoreTimeout, "longest one store operation may take before the call answers UNAVAILABLE (0: no bound)")
	fs.UintVar(&c.MaxStreams, "max-streams", c.MaxStreams, "most calls one client connection may have open at once; clients queue the rest (0: no bound)")
}

// EnvName is the environment variable of a flag: IDEM_ and the flag's name
// upper-cased with dashes as underscores.
func EnvName(flagName string) string {
	return "IDEM_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// ApplyEnv sets every flag of fs not given on the command line from its
// environment variable, so flags win over the environment. Call it after
// fs.Parse.
func ApplyEnv(fs *flag.FlagSet, lookup func(string) (string, bool)) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		v, ok := lookup(EnvName(f.Name))
		if !ok {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("invalid value %q for %s: %v", v, EnvName(f.Name), err))
		}
	})
	return errors.Join(errs...)
}

// clientEnv are the IDEM_* variables idemctl reads, which a pod or shell
// running idemd may hold too, and those of idem's own tests and bench
// scripts (with the prefixes in devEnvPrefixes).
var clientEnv = map[string]bool{"IDEM_ADDR": true, "IDEM_TOKEN": true, "IDEM_TENANT": true, "IDEM_TLS_CA": true,
	"IDEM_ROOT": true, "IDEM_STRESS": true}

var devEnvPrefixes = []string{"IDEM_TEST_", "IDEM_BENCH_"}

// UnknownEnv returns the IDEM_* names in environ (NAME=value entries) that
// set no flag of fs and that idemctl does not read either: a misspelt
// IDEM_STORE_URL would otherwise leave the default store in use unnoticed.
func UnknownEnv(fs *flag.FlagSet, environ []string) []string {
	known := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { known[EnvName(f.Name)] = true })
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "IDEM_") || known[name] || clientEnv[name] ||
			slices.ContainsFunc(devEnvPrefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
			continue
		}
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

func warnUnknownEnv(log *slog.Logger, cfg Config) {
	for _, name := range cfg.unknownEnv {
		log.Warn("environment variable sets no idemd flag; ignored (idemd -h lists them)", "name", name)
	}
}

const (
	maxShutdownDelay  = 5 * time.Minute
	minHealthInterval = 100 * time.Millisecond
	minStoreTimeout   = time.Millisecond
)

// maxResultBytesLimit bounds --max-result-bytes: idemd reads requests of
// twice the limit plus 64 KiB, which must stay within one gRPC message (and
// not wrap around), and PostgreSQL's bytea holds at most 1 GiB.
const maxResultBytesLimit = 1 << 30

// Limits are the server limits the configuration sets.
func (c Config) Limits() (server.Limits, error) {
	l := server.DefaultLimits()
	l.DefaultLease = c.DefaultLease
	l.MaxLease = c.MaxLease
	l.DefaultRetention = c.DefaultRetention
	l.MaxRetention = c.MaxRetention
	l.MaxResultBytes = c.MaxResultBytes
	// Checked here, flag by flag, so the error names the flag to fix:
	// server.Limits only knows its own field names.
	var errs []error
	switch {
	case c.MaxResultBytes <= 0:
		errs = append(errs, fmt.Errorf("--max-result-bytes %d must be positive", c.MaxResultBytes))
	case c.MaxResultBytes > maxResultBytesLimit:
		errs = append(errs, fmt.Errorf("--max-result-bytes %d is above %d (1 GiB), the most a result can be", c.MaxResultBytes, maxResultBytesLimit))
	}
	for _, r := range []struct {
		unit             string
		def, max, min    time.Duration
		defFlag, maxFlag string
	}{
		{"lease", c.DefaultLease, c.MaxLease, l.MinLease, "--default-lease", "--max-lease"},
		{"retention", c.DefaultRetention, c.MaxRetention, l.MinRetention, "--default-retention", "--max-retention"},
	} {
		n := len(errs)
		for _, f := range []struct {
			name string
			v    time.Duration
		}{{r.maxFlag, r.max}, {r.defFlag, r.def}} {
			switch {
			case f.v <= 0:
				errs = append(errs, fmt.Errorf("%s limits: %s %v must be positive", r.unit, f.name, f.v))
			case f.v < r.min:
				errs = append(errs, fmt.Errorf("%s limits: %s %v is below the shortest %s, %v", r.unit, f.name, f.v, r.unit, r.min))
			case f.v > server.MaxDuration:
				errs = append(errs, fmt.Errorf("%s limits: %s %v is beyond %v, the longest a record's times can run", r.unit, f.name, f.v, server.MaxDuration))
			}
		}
		if len(errs) == n && r.def > r.max {
			errs = append(errs, fmt.Errorf("%s limits: %s %v is above %s %v", r.unit, r.defFlag, r.def, r.maxFlag, r.max))
		}
	}
	if len(errs) > 0 {
		return l, errors.Join(errs...)
	}
	return l.WithDefaults()
}

// Validate reports a configuration idemd cannot start with.
func (c Config) Validate() error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, errors.New("--listen is empty"))
	}
	if c.Store == "" {
		errs = append(errs, errors.New("--store is empty"))
	}
	if l, err := c.Limits(); err != nil {
		errs = append(errs, err)
	} else {
		errs = append(errs, c.Policies.within(l)...)
	}
	if c.ShutdownDelay < 0 || c.ShutdownDelay > maxShutdownDelay {
		errs = append(errs, fmt.Errorf("--shutdown-delay %v is outside 0–%v", c.ShutdownDelay, maxShutdownDelay))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, errors.New("--shutdown-timeout is negative"))
	}
	if c.GCPercent <= 0 {
		errs = append(errs, errors.New("--gc-percent must be positive"))
	}
	// Below these floors a store is pinged in a tight loop, or every call
	// fails UNAVAILABLE: typos, not settings.
	if c.HealthInterval < minHealthInterval {
		errs = append(errs, fmt.Errorf("--health-interval %v is below %v", c.HealthInterval, minHealthInterval))
	}
	switch {
	case c.StoreTimeout < 0:
		errs = append(errs, errors.New("--store-timeout is negative"))
	case c.StoreTimeout > 0 && c.StoreTimeout < minStoreTimeout:
		errs = append(errs, fmt.Errorf("--store-timeout %v is below %v (0: no bound)", c.StoreTimeout, minStoreTimeout))
	}
	return errors.Join(errs...)
}

// Policies are per-namespace policies, settable as a repeatable flag.
type Policies map[string]server.Policy

// String implements flag.Value.
func (p Policies) String() string {
	names := make([]string, 0, len(p))
	for ns := range p {
		names = append(names, ns)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, ns := range names {
		pol := p[ns]
		parts[i] = fmt.Sprintf("%s=default-lease=%v,max-lease=%v,default-retention=%v,max-retention=%v,max-result-bytes=%d,store-results=%v",
			ns, pol.DefaultLease, pol.MaxLease, pol.DefaultRetention, pol.MaxRetention, pol.MaxResultSize, pol.StoreResults)
	}
	return strings.Join(parts, ";")
}

// within reports each value that would widen the server's limits, as a
// policy file's does: a policy may narrow them, never widen them, and
// clamping the value quietly would hide the operator's mistake.
func (p Policies) within(l server.Limits) []error {
	names := make([]string, 0, len(p))
	for ns := range p {
		names = append(names, ns)
	}
	sort.Strings(names)
	var errs []error
	for _, ns := range names {
		pol := p[ns]
		// idem refuses such a namespace, so the policy would apply to none.
		if why := server.NamespaceProblem(ns, l.MaxNamespaceBytes); why != "" {
			errs = append(errs, fmt.Errorf("--namespace-policy %q %s, so no namespace can have this policy", ns, why))
		}
		for _, c := range []struct {
			key        string
			v, lo, hi  time.Duration
			flag, unit string
		}{
			{"default-lease", pol.DefaultLease, l.MinLease, l.MaxLease, "--max-lease", "lease"},
			{"max-lease", pol.MaxLease, l.MinLease, l.MaxLease, "--max-lease", "lease"},
			{"default-retention", pol.DefaultRetention, l.MinRetention, l.MaxRetention, "--max-retention", "retention"},
			{"max-retention", pol.MaxRetention, l.MinRetention, l.MaxRetention, "--max-retention", "retention"},
		} {
			switch {
			case c.v > c.hi:
				errs = append(errs, fmt.Errorf("--namespace-policy %s: %s=%v is above %s (%v); a policy may narrow the limits, never widen them", ns, c.key, c.v, c.flag, c.hi))
			case c.v != 0 && c.v < c.lo:
				// The server would serve the minimum instead.
				errs = append(errs, fmt.Errorf("--namespace-policy %s: %s=%v is below the shortest %s, %v", ns, c.key, c.v, c.unit, c.lo))
			}
		}
		// The server would clamp the default to the maximum quietly.
		if pol.MaxLease != 0 && pol.DefaultLease > pol.MaxLease {
			errs = append(errs, fmt.Errorf("--namespace-policy %s: default-lease=%v is above its max-lease=%v", ns, pol.DefaultLease, pol.MaxLease))
		}
		if pol.MaxRetention != 0 && pol.DefaultRetention > pol.MaxRetention {
			errs = append(errs, fmt.Errorf("--namespace-policy %s: default-retention=%v is above its max-retention=%v", ns, pol.DefaultRetention, pol.MaxRetention))
		}
		if pol.MaxResultSize > l.MaxResultBytes {
			errs = append(errs, fmt.Errorf("--namespace-policy %s: max-result-bytes=%d is above --max-result-bytes (%d); a policy may narrow the limits, never widen them", ns, pol.MaxResultSize, l.MaxResultBytes))
		}
	}
	return errs
}

// Set implements flag.Value: "NS=key=value,…", several separated by ';'.
// Unset keys keep the server's limits; store-results defaults to true.
func (p Policies) Set(v string) error {
	for _, one := range strings.Split(v, ";") {
		one = strings.TrimSpace(one)
		if one == "" {
			continue
		}
		ns, spec, ok := strings.Cut(one, "=")
		// Spaces around the namespace are dropped, as around a policy
		// file's pattern: "pay =…" is meant for "pay".
		ns = strings.TrimSpace(ns)
		if !ok || ns == "" {
			return fmt.Errorf("policy %q: want NAMESPACE=key=value,…", one)
		}
		// A namespace here is exact: "payments.*" would narrow only a
		// namespace spelled with the '*', and the ones meant would keep
		// the server's limits without a word.
		if strings.Contains(ns, "*") {
			return fmt.Errorf("policy of %q: --namespace-policy takes exact namespaces, not patterns; use a --policy file for %q", ns, ns)
		}
		// A repeat would replace the earlier value quietly, where a policy
		// file refuses the same as overlapping.
		if _, dup := p[ns]; dup {
			return fmt.Errorf("policy of %q: namespace %q given twice", ns, ns)
		}
		pol := server.Policy{StoreResults: true}
		seen := map[string]bool{}
		for _, kv := range strings.Split(spec, ",") {
			k, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
			if !ok {
				return fmt.Errorf("policy of %q: %q is not key=value", ns, kv)
			}
			if seen[k] {
				return fmt.Errorf("policy of %q: %s given twice", ns, k)
			}
			seen[k] = true
			var err error
			dur := func(dst *time.Duration) {
				var d time.Duration
				if d, err = time.ParseDuration(val); err == nil && d <= 0 {
					err = errors.New("must be positive")
				}
				*dst = d
			}
			switch k {
			case "default-lease":
				dur(&pol.DefaultLease)
			case "max-lease":
				dur(&pol.MaxLease)
			case "default-retention":
				dur(&pol.DefaultRetention)
			case "max-retention":
				dur(&pol.MaxRetention)
			case "max-result-bytes":
				if pol.MaxResultSize, err = strconv.Atoi(val); err == nil && pol.MaxResultSize <= 0 {
					err = errors.New("must be positive")
				}
			case "store-results":
				pol.StoreResults, err = strconv.ParseBool(val)
			default:
				return fmt.Errorf("policy of %q: unknown key %q", ns, k)
			}
			if err != nil {
				return fmt.Errorf("policy of %q: %s=%s: %v", ns, k, val, err)
			}
		}
		p[ns] = pol
	}
	return nil
}
