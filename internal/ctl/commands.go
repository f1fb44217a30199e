package ctl

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

var commands []command

func init() {
	commands = []command{
		{name: "reserve", args: "NAMESPACE KEY", summary: "reserve a key (the answer: RESERVED, COMPLETED, IN_PROGRESS or MISMATCH)", exits: reserveExits, flags: reserveFlags, run: runReserve},
		{name: "complete", args: "NAMESPACE KEY TOKEN", summary: "complete a reserved key with a result; TOKEN is the fencing token its Reserve returned", flags: completeFlags, run: runComplete},
		{name: "release", args: "NAMESPACE KEY TOKEN", summary: "release a reserved key so the next Reserve takes over; TOKEN is the fencing token its Reserve returned", run: runRelease},
		{name: "lookup", args: "NAMESPACE KEY", summary: "show a record", run: runLookup},
		{name: "list", args: "NAMESPACE", summary: "list records (admin)", flags: listFlags, run: runList},
		{name: "delete", args: "NAMESPACE KEY", summary: "delete a record (admin)", run: runDelete},
		{name: "force-release", args: "NAMESPACE KEY", summary: "release an in-progress record whose owner died (admin)", run: runForceRelease},
		{name: "stats", summary: "count records by namespace and state (admin)", flags: statsFlags, run: runStats},
		{name: "health", summary: "ask idemd's gRPC health service", flags: healthFlags, run: runHealth},
		{name: "bench", summary: "load idem (and, with --floor, its health check) and report throughput and latency", flags: benchFlags, run: runBench},
		{name: "token", args: "mint", summary: "mint a bearer token for --tenant (offline; prints the token once and its tokens-file line)", flags: tokenFlags, run: runToken},
		{name: "version", summary: "print idemctl's version", run: runVersion},
	}
}

func mainUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "idemctl operates and measures idem, the gRPC idempotency key-store.")
	fmt.Fprintln(w, "\nUsage: idemctl [global flags] COMMAND [flags] [args]")
	fmt.Fprintln(w, "\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-14s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nGlobal flags (also accepted after the command):")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	fmt.Fprintln(w, "\nExit codes: 0 ok, 1 failed (also: no record; bench: any call failed), 2 bad usage, 3 idem unreachable,\n"+
		"4 credentials refused, 5 reserve answered COMPLETED, 6 IN_PROGRESS, 7 MISMATCH (0 only for RESERVED).")
}

func cmdUsage(w io.Writer, c command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: idemctl %s [flags] %s\n\n%s\n", c.name, c.args, c.summary)
	if c.exits != "" {
		fmt.Fprintf(w, "\n%s\n", c.exits)
	}
	// Only the command's own flags; the global ones are in idemctl -h.
	global := flag.NewFlagSet("", flag.ContinueOnError)
	(&globals{}).register(global)
	own := flag.NewFlagSet("", flag.ContinueOnError)
	fs.VisitAll(func(f *flag.Flag) {
		if global.Lookup(f.Name) == nil {
			own.Var(f.Value, f.Name, f.Usage)
		}
	})
	if hasFlags(own) {
		fmt.Fprintln(w, "\nFlags:")
		own.SetOutput(w)
		own.PrintDefaults()
	}
	fmt.Fprintln(w, "\nGlobal flags (--addr, --tls-*, --insecure, --token, --tenant, -o, --timeout): see idemctl -h.")
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// nsKey takes the NAMESPACE KEY arguments.
func (r *invocation) nsKey(pos []string) (string, string, error) {
	if len(pos) != 2 {
		return "", "", usagef("want NAMESPACE KEY, got %d argument(s)", len(pos))
	}
	if err := validText("NAMESPACE", pos[0]); err != nil {
		return "", "", err
	}
	if err := validText("KEY", pos[1]); err != nil {
		return "", "", err
	}
	r.missing = word(pos[0]) + "/" + word(pos[1])
	if r.g.tenant != "" {
		r.missing += " of tenant " + word(r.g.tenant)
	}
	return pos[0], pos[1], nil
}

// nsKeyToken takes the NAMESPACE KEY TOKEN arguments. The fencing token is
// positional because --token is the bearer credential.
func (r *invocation) nsKeyToken(pos []string) (string, string, uint64, error) {
	if len(pos) != 3 {
		return "", "", 0, usagef("want NAMESPACE KEY TOKEN, got %d argument(s)", len(pos))
	}
	ns, key, err := r.nsKey(pos[:2])
	if err != nil {
		return "", "", 0, err
	}
	tok, err := strconv.ParseUint(pos[2], 10, 64)
	if err != nil || tok == 0 {
		return "", "", 0, usagef("TOKEN %q: want the positive fencing token Reserve returned", pos[2])
	}
	return ns, key, tok, nil
}

// validText refuses an argument that is not UTF-8 (a key from a file in
// another encoding): the request could not even be encoded, and the error
// would name no argument.
func validText(name, v string) error {
	if !utf8.ValidString(v) {
		return usagef("%s %q is not valid UTF-8", name, v)
	}
	return nil
}

func noArgs(pos []string) error {
	if len(pos) != 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	return nil
}

// call connects and runs f under the call deadline.
func call[T any](ctx context.Context, r *invocation, f func(context.Context) (T, error)) (T, error) {
	return callWithin(ctx, r, 0, f)
}

// callWithin connects and runs f under a deadline d away: --timeout, and
// wait on top of it.
func callWithin[T any](ctx context.Context, r *invocation, wait time.Duration, f func(context.Context) (T, error)) (T, error) {
	var zero T
	if err := r.connect(); err != nil {
		return zero, err
	}
	cctx, cancel := context.WithTimeout(ctx, r.g.timeout+wait)
	defer cancel()
	v, err := f(cctx)
	// Our own deadline, not the caller's (a signal) nor one the server
	// answered with well before it. The server ends the call at the
	// deadline idemctl sent, so its answer may arrive a moment before
	// idemctl's own timer fires: that is our deadline too.
	if status.Code(err) == codes.DeadlineExceeded && ctx.Err() == nil && atDeadline(cctx) {
		return zero, timeoutError{err: err, wait: wait}
	}
	return v, err
}

// deadlineSlack is how close to idemctl's deadline a server's
// DEADLINE_EXCEEDED counts as that deadline.
const deadlineSlack = 50 * time.Millisecond

func atDeadline(ctx context.Context) bool {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && time.Until(dl) <= deadlineSlack
}

func (r *invocation) idem() idemv1.IdempotencyServiceClient {
	return idemv1.NewIdempotencyServiceClient(r.conn)
}

func (r *invocation) admin() idemv1.AdminServiceClient { return idemv1.NewAdminServiceClient(r.conn) }

func optDuration(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

type reserveOpts struct {
	fingerprint, fingerprintHex string
	lease, retention, wait      time.Duration
}

func reserveFlags(fs *flag.FlagSet) any {
	o := &reserveOpts{}
	fs.StringVar(&o.fingerprint, "fingerprint", "", "fingerprint of the request, as text")
	fs.StringVar(&o.fingerprintHex, "fingerprint-hex", "", "fingerprint of the request, in hex")
	fs.DurationVar(&o.lease, "lease", 0, "lease (default: the server's)")
	fs.DurationVar(&o.retention, "retention", 0, "retention (default: the server's)")
	fs.DurationVar(&o.wait, "wait", 0, "wait up to this long for an in-progress key to finish (added to --timeout)")
	return o
}

func runReserve(ctx context.Context, r *invocation, pos []string, opts any) error {
	o := opts.(*reserveOpts)
	ns, key, err := r.nsKey(pos)
	if err != nil {
		return err
	}
	fp := []byte(o.fingerprint)
	if o.fingerprintHex != "" {
		if o.fingerprint != "" {
			return usagef("--fingerprint and --fingerprint-hex exclude each other")
		}
		if fp, err = hex.DecodeString(o.fingerprintHex); err != nil {
			return usagef("--fingerprint-hex: %v", err)
		}
	}
	// The server may hold a waiting Reserve for all of --wait: that time
	// comes on top of --timeout, or a long wait would end early, answering
	// IN_PROGRESS at --timeout.
	resp, err := callWithin(ctx, r, max(o.wait, 0), func(ctx context.Context) (*idemv1.ReserveResponse, error) {
		return r.idem().Reserve(ctx, &idemv1.ReserveRequest{Tenant: r.g.tenant, Namespace: ns, Key: key, Fingerprint: fp,
			LeaseTtl: optDuration(o.lease), Retention: optDuration(o.retention), Wait: optDuration(o.wait)})
	})
	if err != nil {
		return err
	}
	if err := r.print(resp, func(w io.Writer) {
		writeRecord(w, resp.GetRecord(), [2]string{"outcome", outcomeName(resp.GetOutcome())})
	}); err != nil {
		return err
	}
	return reserveExit(resp.GetOutcome())
}

// reserveExit is reserve's exit status: 0 only when the caller now holds
// the key, so `idemctl reserve NS KEY && work` does the work once.
func reserveExit(o idemv1.ReserveOutcome) error {
	switch o {
	case idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED:
		return nil
	case idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED:
		return exitStatus(ExitCompleted)
	case idemv1.ReserveOutcome_RESERVE_OUTCOME_IN_PROGRESS:
		return exitStatus(ExitInProgress)
	case idemv1.ReserveOutcome_RESERVE_OUTCOME_MISMATCH:
		return exitStatus(ExitMismatch)
	}
	return fmt.Errorf("idem answered outcome %v, which this idemctl does not know", o)
}

// reserveExits documents reserveExit.
const reserveExits = "Exit codes: 0 RESERVED (the caller now holds the key), 5 COMPLETED (the stored result is printed),\n" +
	"6 IN_PROGRESS (another caller holds the key), 7 MISMATCH (the key holds another request);\n" +
	"1–4 as for every command (idemctl -h). `idemctl reserve NS KEY && work` runs work only when this call took the key."

type completeOpts struct {
	code          int
	message, body string
	bodyFile      string
	retention     time.Duration
}

func completeFlags(fs *flag.FlagSet) any {
	o := &completeOpts{}
	fs.IntVar(&o.code, "code", 0, "result code (a gRPC code; 0 is OK)")
	fs.StringVar(&o.message, "message", "", "result message")
	fs.StringVar(&o.body, "body", "", "result body, as text")
	fs.StringVar(&o.bodyFile, "body-file", "", "file holding the result body ('-' for stdin)")
	fs.DurationVar(&o.retention, "retention", 0, "retention (default: the server's)")
	return o
}

func runComplete(ctx context.Context, r *invocation, pos []string, opts any) error {
	o := opts.(*completeOpts)
	ns, key, token, err := r.nsKeyToken(pos)
	if err != nil {
		return err
	}
	if o.code < math.MinInt32 || o.code > math.MaxInt32 {
		// The field is int32: a wrapped code could store a failure as OK.
		return usagef("--code %d: out of range", o.code)
	}
	if err := validText("--message", o.message); err != nil {
		return err
	}
	body := []byte(o.body)
	if o.bodyFile != "" {
		if o.body != "" {
			return usagef("--body and --body-file exclude each other")
		}
		if o.bodyFile == "-" {
			body, err = io.ReadAll(os.Stdin)
		} else {
			body, err = os.ReadFile(o.bodyFile)
		}
		if err != nil {
			return fmt.Errorf("--body-file: %w", err)
		}
	}
	resp, err := call(ctx, r, func(ctx context.Context) (*idemv1.CompleteResponse, error) {
		return r.idem().Complete(ctx, &idemv1.CompleteRequest{Tenant: r.g.tenant, Namespace: ns, Key: key, Token: token,
			Result: &idemv1.Result{Code: int32(o.code), Message: o.message, Body: body}, Retention: optDuration(o.retention)})
	})
	if err != nil {
		return err
	}
	return r.print(resp, func(w io.Writer) { writeRecord(w, resp.GetRecord()) })
}

func runRelease(ctx context.Context, r *invocation, pos []string, _ any) error {
	ns, key, token, err := r.nsKeyToken(pos)
	if err != nil {
		return err
	}
	resp, err := call(ctx, r, func(ctx context.Context) (*idemv1.ReleaseResponse, error) {
		return r.idem().Release(ctx, &idemv1.ReleaseRequest{Tenant: r.g.tenant, Namespace: ns, Key: key, Token: token})
	})
	if err != nil {
		return err
	}
	return r.print(resp, func(w io.Writer) { writeRecord(w, resp.GetRecord()) })
}

func runLookup(ctx context.Context, r *invocation, pos []string, _ any) error {
	ns, key, err := r.nsKey(pos)
	if err != nil {
		return err
	}
	resp, err := call(ctx, r, func(ctx context.Context) (*idemv1.LookupResponse, error) {
		return r.idem().Lookup(ctx, &idemv1.LookupRequest{Tenant: r.g.tenant, Namespace: ns, Key: key})
	})
	if err != nil {
		return err
	}
	return r.print(resp, func(w io.Writer) { writeRecord(w, resp.GetRecord()) })
}

func runDelete(ctx context.Context, r *invocation, pos []string, _ any) error {
	ns, key, err := r.nsKey(pos)
	if err != nil {
		return err
	}
	resp, err := call(ctx, r, func(ctx context.Context) (*idemv1.DeleteKeyResponse, error) {
		return r.admin().DeleteKey(ctx, &idemv1.DeleteKeyRequest{Tenant: r.g.tenant, Namespace: ns, Key: key})
	})
	if err != nil {
		return err
	}
	return r.print(resp, func(w io.Writer) { writeRecord(w, resp.GetRecord(), [2]string{"deleted", "yes"}) })
}

func runForceRelease(ctx context.Context, r *invocation, pos []string, _ any) error {
	ns, key, err := r.nsKey(pos)
	if err != nil {
		return err
	}
	resp, err := call(ctx, r, func(ctx context.Context) (*idemv1.ForceReleaseResponse, error) {
		return r.admin().ForceRelease(ctx, &idemv1.ForceReleaseRequest{Tenant: r.g.tenant, Namespace: ns, Key: key})
	})
	if err != nil {
		return err
	}
	return r.print(resp, func(w io.Writer) { writeRecord(w, resp.GetRecord()) })
}

type listOpts struct {
	prefix, pageToken string
	pageSize          int
	all               bool
}

func listFlags(fs *flag.FlagSet) any {
	o := &listOpts{}
	fs.StringVar(&o.prefix, "prefix", "", "only keys starting with this")
	fs.IntVar(&o.pageSize, "page-size", 100, "records per page (at most 1000)")
	fs.StringVar(&o.pageToken, "page-token", "", "continue after a previous page")
	fs.BoolVar(&o.all, "all", false, "follow every page")
	return o
}

func runList(ctx context.Context, r *invocation, pos []string, opts any) error {
	o := opts.(*listOpts)
	if len(pos) != 1 {
		return usagef("want NAMESPACE, got %d argument(s)", len(pos))
	}
	ns := pos[0]
	for _, a := range [][2]string{{"NAMESPACE", ns}, {"--prefix", o.prefix}, {"--page-token", o.pageToken}} {
		if err := validText(a[0], a[1]); err != nil {
			return err
		}
	}
	if o.pageSize < 1 || o.pageSize > 1000 {
		return usagef("--page-size %d: must be 1–1000", o.pageSize)
	}
	if o.all && o.pageToken != "" {
		return usagef("--all and --page-token exclude each other")
	}
	all := &idemv1.ListKeysResponse{}
	token := o.pageToken
	for {
		resp, err := call(ctx, r, func(ctx context.Context) (*idemv1.ListKeysResponse, error) {
			return r.admin().ListKeys(ctx, &idemv1.ListKeysRequest{Tenant: r.g.tenant, Namespace: ns, KeyPrefix: o.prefix,
				PageSize: int32(o.pageSize), PageToken: token})
		})
		if err != nil {
			return err
		}
		all.Records = append(all.Records, resp.GetRecords()...)
		all.NextPageToken = resp.GetNextPageToken()
		token = resp.GetNextPageToken()
		if !o.all || token == "" {
			break
		}
	}
	return r.print(all, func(w io.Writer) {
		writeRecords(w, all.GetRecords())
		if all.GetNextPageToken() != "" {
			fmt.Fprintf(r.env.Stderr, "more records: --page-token %s (or --all)\n", all.GetNextPageToken())
		}
	})
}

type statsOpts struct{ namespace string }

func statsFlags(fs *flag.FlagSet) any {
	o := &statsOpts{}
	fs.StringVar(&o.namespace, "namespace", "", "only this namespace")
	return o
}

func runStats(ctx context.Context, r *invocation, pos []string, opts any) error {
	o := opts.(*statsOpts)
	if err := noArgs(pos); err != nil {
		return err
	}
	if err := validText("--namespace", o.namespace); err != nil {
		return err
	}
	resp, err := call(ctx, r, func(ctx context.Context) (*idemv1.StatsResponse, error) {
		return r.admin().Stats(ctx, &idemv1.StatsRequest{Tenant: r.g.tenant, Namespace: o.namespace})
	})
	if err != nil {
		return err
	}
	return r.print(resp, func(w io.Writer) { writeStats(w, resp) })
}

type healthOpts struct{ service string }

func healthFlags(fs *flag.FlagSet) any {
	o := &healthOpts{}
	fs.StringVar(&o.service, "service", "", "service to ask about (default: the whole server)")
	return o
}

func runHealth(ctx context.Context, r *invocation, pos []string, opts any) error {
	o := opts.(*healthOpts)
	if err := noArgs(pos); err != nil {
		return err
	}
	if err := validText("--service", o.service); err != nil {
		return err
	}
	resp, err := call(ctx, r, func(ctx context.Context) (*healthpb.HealthCheckResponse, error) {
		return healthpb.NewHealthClient(r.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: o.service})
	})
	if err != nil {
		return err
	}
	if err := r.print(resp, func(w io.Writer) { fmt.Fprintln(w, resp.GetStatus()) }); err != nil {
		return err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("idem at %s is %s", r.g.addr, resp.GetStatus())
	}
	return nil
}

// Version is set at link time (-ldflags "-X github.com/idemhq/idem/internal/ctl.Version=v1.2.3");
// otherwise the module version or VCS revision from the build info is shown.
var Version = ""

func runVersion(_ context.Context, r *invocation, pos []string, _ any) error {
	if err := noArgs(pos); err != nil {
		return err
	}
	v, rev, goVer := Version, "", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVer = bi.GoVersion
		if v == "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				rev = s.Value
			}
		}
	}
	if v == "" {
		v = "(devel)"
	}
	if r.g.output == "json" {
		return writeJSON(r.env.Stdout, map[string]string{"version": v, "revision": rev, "go": goVer})
	}
	fmt.Fprintf(r.env.Stdout, "idemctl %s", v)
	if rev != "" {
		fmt.Fprintf(r.env.Stdout, " (%s)", rev)
	}
	fmt.Fprintf(r.env.Stdout, " %s\n", goVer)
	return nil
}

// print writes m as JSON or calls table.
func (r *invocation) print(m proto.Message, table func(io.Writer)) error {
	if r.g.output == "json" {
		return writeProtoJSON(r.env.Stdout, m)
	}
	table(r.env.Stdout)
	return nil
}
