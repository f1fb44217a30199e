package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/server/auth"
)

// field returns the value of a FIELD VALUE line of a record table.
func field(t *testing.T, out, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\s{2,}(.*)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %q line in:\n%s", name, out)
	}
	return strings.TrimSpace(m[1])
}

func TestRecordLifecycle(t *testing.T) {
	ctx := testContext(t)
	addr := startServer(t)

	out := mustRun(ctx, t, addr, "reserve", "orders", "o-1", "--fingerprint", "f1")
	if got := field(t, out, "outcome"); got != "RESERVED" {
		t.Fatalf("reserve outcome = %q, want RESERVED", got)
	}
	if got := field(t, out, "token"); got != "1" {
		t.Fatalf("reserve token = %q, want 1", got)
	}
	// Flags after the positional arguments, as operators type them.
	out = mustRun(ctx, t, addr, "complete", "orders", "o-1", "1", "--body", `{"id":7}`, "--code", "0")
	if got := field(t, out, "state"); got != "COMPLETED" {
		t.Fatalf("complete state = %q, want COMPLETED", got)
	}
	// A replay prints the stored result and exits ExitCompleted, not 0.
	r := run(ctx, t, nil, "--addr", addr, "reserve", "orders", "o-1", "--fingerprint", "f1")
	if r.code != ExitCompleted {
		t.Fatalf("second reserve: exit %d, stderr %q; want %d", r.code, r.stderr, ExitCompleted)
	}
	out = r.stdout
	if got := field(t, out, "outcome"); got != "COMPLETED" {
		t.Fatalf("second reserve outcome = %q, want COMPLETED", got)
	}
	if got, want := field(t, out, "result body"), `"{\"id\":7}"`; got != want {
		t.Fatalf("replayed body = %s, want %s", got, want)
	}

	out = mustRun(ctx, t, addr, "-o", "json", "lookup", "orders", "o-1")
	var rec struct {
		Record struct {
			Key    string `json:"key"`
			State  string `json:"state"`
			Token  string `json:"token"`
			Result struct {
				Body []byte `json:"body"`
			} `json:"result"`
		} `json:"record"`
	}
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatalf("lookup -o json is not JSON: %v\n%s", err, out)
	}
	if rec.Record.Key != "o-1" || rec.Record.State != "RECORD_STATE_COMPLETED" || rec.Record.Token != "1" || string(rec.Record.Result.Body) != `{"id":7}` {
		t.Fatalf("lookup json = %+v, want o-1 COMPLETED token 1 body {\"id\":7}", rec.Record)
	}

	// A released key is taken over with the next token.
	mustRun(ctx, t, addr, "reserve", "orders", "o-2")
	if out = mustRun(ctx, t, addr, "release", "orders", "o-2", "1"); field(t, out, "state") != "RELEASED" {
		t.Fatalf("release state = %q, want RELEASED", field(t, out, "state"))
	}
	if out = mustRun(ctx, t, addr, "reserve", "orders", "o-2"); field(t, out, "token") != "2" {
		t.Fatalf("takeover token = %q, want 2", field(t, out, "token"))
	}
	// A stale token is told so, in one line.
	r = run(ctx, t, nil, "--addr", addr, "complete", "orders", "o-2", "1")
	if want := "idemctl: FailedPrecondition: idem: lease lost"; r.code != ExitFailed || !strings.HasPrefix(r.stderr, want) {
		t.Fatalf("complete with a stale token: exit %d stderr %q, want exit 1 and %q…", r.code, r.stderr, want)
	}
	// An operator unsticks it.
	if out = mustRun(ctx, t, addr, "force-release", "orders", "o-2"); field(t, out, "state") != "RELEASED" {
		t.Fatalf("force-release state = %q, want RELEASED", field(t, out, "state"))
	}

	out = mustRun(ctx, t, addr, "stats")
	for _, want := range []string{"orders     COMPLETED  1", "orders     RELEASED   1", "total                 2"} {
		if !strings.Contains(out, want) {
			t.Errorf("stats output lacks %q:\n%s", want, out)
		}
	}

	out = mustRun(ctx, t, addr, "delete", "orders", "o-1")
	if got := field(t, out, "deleted"); got != "yes" {
		t.Fatalf("delete = %q, want yes", got)
	}
	r = run(ctx, t, nil, "--addr", addr, "lookup", "orders", "o-1")
	if r.code != ExitFailed || r.stderr != "idemctl: no record orders/o-1\n" {
		t.Fatalf("lookup after delete: exit %d stderr %q, want exit 1 and %q", r.code, r.stderr, "idemctl: no record orders/o-1\n")
	}
}

func TestListPages(t *testing.T) {
	ctx := testContext(t)
	addr := startServer(t)
	for i := range 5 {
		mustRun(ctx, t, addr, "reserve", "ns", fmt.Sprintf("k%d", i))
	}
	mustRun(ctx, t, addr, "reserve", "ns", "other")

	countRows := func(out string) int { return strings.Count(out, "\nns ") }
	if got := countRows(mustRun(ctx, t, addr, "list", "ns", "--prefix", "k", "--all", "--page-size", "2")); got != 5 {
		t.Fatalf("list --all rows = %d, want 5", got)
	}

	r := run(ctx, t, nil, "--addr", addr, "list", "ns", "--prefix", "k", "--page-size", "2")
	if r.code != 0 || countRows(r.stdout) != 2 {
		t.Fatalf("first page: exit %d, %d rows, want 0 and 2:\n%s", r.code, countRows(r.stdout), r.stdout)
	}
	m := regexp.MustCompile(`--page-token (\S+)`).FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatalf("first page names no next page token; stderr %q", r.stderr)
	}
	out := mustRun(ctx, t, addr, "-o", "json", "list", "ns", "--prefix", "k", "--page-size", "10", "--page-token", m[1])
	var page struct {
		Records []struct {
			Key string `json:"key"`
		} `json:"records"`
		Next string `json:"next_page_token"`
	}
	if err := json.Unmarshal([]byte(out), &page); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, r := range page.Records {
		keys = append(keys, r.Key)
	}
	if got, want := strings.Join(keys, ","), "k2,k3,k4"; got != want || page.Next != "" {
		t.Fatalf("second page = %s (next %q), want %s and no next token", got, page.Next, want)
	}
}

func TestHealthAndVersion(t *testing.T) {
	ctx := testContext(t)
	addr := startServer(t)
	if got := mustRun(ctx, t, addr, "health"); got != "SERVING\n" {
		t.Fatalf("health = %q, want SERVING", got)
	}
	// The address from the environment.
	if r := run(ctx, t, map[string]string{"IDEM_ADDR": addr}, "-o", "json", "health"); r.code != 0 || !strings.Contains(r.stdout, `"SERVING"`) {
		t.Fatalf("health with IDEM_ADDR: exit %d out %q err %q", r.code, r.stdout, r.stderr)
	}
	if got := mustRun(ctx, t, addr, "version"); !strings.HasPrefix(got, "idemctl ") {
		t.Fatalf("version = %q, want idemctl …", got)
	}
	for _, args := range [][]string{{"-h"}, {"help"}, {"bench", "-h"}, {"list", "--help"}} {
		r := run(ctx, t, nil, args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Usage: idemctl") || r.stderr != "" {
			t.Fatalf("idemctl %v: exit %d, stdout %q, stderr %q; want usage on stdout and exit 0", args, r.code, r.stdout, r.stderr)
		}
	}
}

func TestErrors(t *testing.T) {
	ctx := testContext(t)
	addr := startServer(t)
	authAddr := startServer(t, server.WithTenantFunc(bearerTenant))
	down := closedAddr(t)
	for _, tc := range []struct {
		name       string
		env        map[string]string
		args       []string
		wantCode   int
		wantStderr string // prefix of the first line
	}{
		{"wrong address", nil, []string{"--addr", down, "lookup", "ns", "k"}, ExitUnreachable, "idemctl: cannot reach idem at " + down + ": "},
		{"wrong address from env", map[string]string{"IDEM_ADDR": down}, []string{"health"}, ExitUnreachable, "idemctl: cannot reach idem at " + down + ": "},
		{"wrong address bench", nil, []string{"--addr", down, "bench", "--count", "1"}, ExitUnreachable, "idemctl: cannot reach idem at " + down + ": "},
		{"missing record", nil, []string{"--addr", addr, "lookup", "ns", "missing"}, ExitFailed, "idemctl: no record ns/missing"},
		{"missing record of a tenant", nil, []string{"--addr", addr, "--tenant", "t1", "delete", "ns", "missing"}, ExitFailed, "idemctl: no record ns/missing of tenant t1"},
		{"refused token", nil, []string{"--addr", authAddr, "--token", "bad", "lookup", "ns", "k"}, ExitCredentials, "idemctl: credentials refused: "},
		{"refused token from env", map[string]string{"IDEM_TOKEN": "bad"}, []string{"--addr", authAddr, "stats"}, ExitCredentials, "idemctl: credentials refused: "},
		{"other tenant", nil, []string{"--addr", authAddr, "--token", "good", "--tenant", "evil", "lookup", "ns", "k"}, ExitCredentials, "idemctl: credentials refused: "},
		{"accepted token", nil, []string{"--addr", authAddr, "--token", "good", "lookup", "ns", "k"}, ExitFailed, "idemctl: no record ns/k"},
		{"complete missing record", nil, []string{"--addr", addr, "complete", "ns", "never", "3"}, ExitFailed, "idemctl: no record ns/never"},
		{"unknown flag", nil, []string{"--addr", addr, "lookup", "--nope", "ns", "k"}, ExitUsage, "idemctl: flag provided but not defined: -nope"},
		{"unknown command", nil, []string{"frobnicate"}, ExitUsage, `idemctl: unknown command "frobnicate"`},
		{"no command", nil, nil, ExitUsage, "idemctl operates"},
		{"missing key", nil, []string{"--addr", addr, "lookup", "ns"}, ExitUsage, "idemctl: want NAMESPACE KEY, got 1 argument(s)"},
		{"bad fencing token", nil, []string{"--addr", addr, "complete", "ns", "k", "zero"}, ExitUsage, `idemctl: TOKEN "zero"`},
		{"bad output", nil, []string{"--addr", addr, "-o", "yaml", "stats"}, ExitUsage, `idemctl: -o "yaml": want table or json`},
		{"bad timeout", nil, []string{"--addr", addr, "--timeout", "0s", "stats"}, ExitUsage, "idemctl: --timeout 0s: must be positive"},
		{"cert without key", nil, []string{"--addr", addr, "--tls-cert", "c.pem", "stats"}, ExitUsage, "idemctl: --tls-cert and --tls-key go together"},
		{"list without namespace", nil, []string{"--addr", addr, "list"}, ExitUsage, "idemctl: want NAMESPACE"},
		{"page size over the limit", nil, []string{"--addr", addr, "list", "ns", "--page-size", "1001"}, ExitUsage, "idemctl: --page-size 1001: "},
		{"insecure with a CA", nil, []string{"--addr", addr, "--insecure", "--tls-ca", "ca.pem", "health"}, ExitUsage, "idemctl: --insecure excludes --tls-ca, --tls-cert and --tls-key"},
		{"insecure with a CA from env", map[string]string{"IDEM_TLS_CA": "ca.pem"}, []string{"--addr", addr, "--insecure", "health"}, ExitUsage, "idemctl: --insecure excludes"},
		{"token with a trailing newline", map[string]string{"IDEM_TOKEN": "good\n"}, []string{"--addr", authAddr, "lookup", "ns", "k"}, ExitFailed, "idemctl: no record ns/k"},
		{"bench bad mix", nil, []string{"--addr", addr, "bench", "--mix", "new=50"}, ExitUsage, `idemctl: idem: mix "new=50" adds up to 50%`},
		{"bench bad op", nil, []string{"--addr", addr, "bench", "--op", "lookup"}, ExitUsage, `idemctl: idem: op "lookup" is unknown`},
		{"bench no callers", nil, []string{"--addr", addr, "bench", "--concurrency", "0"}, ExitUsage, "idemctl: idem: concurrency 0 must be at least 1"},
		{"bench batch over keyspace", nil, []string{"--addr", addr, "bench", "--mix", "completed=100", "--keyspace", "4", "--batch", "8"}, ExitUsage, "idemctl: idem: keyspace 4 must be at least 1 and at least the batch size 8"},
		{"bench no conns", nil, []string{"--addr", addr, "bench", "--conns", "0"}, ExitUsage, "idemctl: --conns 0: must be at least 1"},
		{"bench jpeg plot", nil, []string{"--addr", addr, "bench", "--plot", "x.jpg"}, ExitUsage, "idemctl: --plot x.jpg: the chart is written as SVG or PNG, chosen by the name: end it in .svg or .png"},
		{"bench plot without extension", nil, []string{"--addr", addr, "bench", "--plot", "chart"}, ExitUsage, "idemctl: --plot chart: the chart is written as SVG or PNG"},
		{"bench every call refused", nil, []string{"--addr", authAddr, "--token", "bad", "bench", "--count", "3", "--concurrency", "1"}, ExitFailed, "idemctl: bench: no call succeeded (errors: map[Unauthenticated:3])"},
		{"bench bad pid", nil, []string{"--addr", addr, "bench", "--server-pid", "999999999"}, ExitUsage, "idemctl: --server-pid 999999999: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(ctx, t, tc.env, tc.args...)
			if r.code != tc.wantCode || !strings.HasPrefix(r.stderr, tc.wantStderr) {
				t.Fatalf("idemctl %s: exit %d, stderr %q; want exit %d, stderr starting %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.wantCode, tc.wantStderr)
			}
			if tc.wantCode != ExitUsage && strings.Count(r.stderr, "\n") != 1 {
				t.Fatalf("stderr %q: want exactly one line", r.stderr)
			}
		})
	}
}

func TestPlaintextDefault(t *testing.T) {
	for _, tc := range []struct {
		addr     string
		insecure []string
		want     bool
	}{
		{"127.0.0.1:50051", nil, true},
		{"localhost:50051", nil, true},
		{"[::1]:50051", nil, true},
		{"dns:///localhost:50051", nil, true},
		{"unix:///run/idem.sock", nil, true},
		{"idem.internal:50051", nil, false},
		{"10.0.0.7:50051", nil, false},
		{"idem.internal:50051", []string{"--insecure"}, true},
		{"127.0.0.1:50051", []string{"--insecure=false"}, false},
	} {
		t.Run(tc.addr+strings.Join(tc.insecure, ""), func(t *testing.T) {
			g := &globals{addr: tc.addr}
			fs := newTestFlagSet(g)
			if err := fs.Parse(tc.insecure); err != nil {
				t.Fatal(err)
			}
			if got := g.plaintext(); got != tc.want {
				t.Fatalf("plaintext(%s %v) = %v, want %v", tc.addr, tc.insecure, got, tc.want)
			}
		})
	}
}

func TestTokenMint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	r := run(ctx, t, nil, "--tenant", "payments", "-o", "json", "token", "mint", "--role", "admin", "--name", "ops")
	if r.code != 0 {
		t.Fatalf("token mint exit %d, stderr %q", r.code, r.stderr)
	}
	var got struct {
		Token string `json:"token"`
		Line  string `json:"tokens_file_line"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("token mint output %q: %v", r.stdout, err)
	}
	if want := auth.HashToken(got.Token); !strings.HasPrefix(got.Line, want+" ") {
		t.Errorf("tokens-file line = %q, want it to start with the token's hash %q", got.Line, want)
	}
	for _, want := range []string{"tenant=payments", "role=admin", "name=ops"} {
		if !strings.Contains(got.Line, want) {
			t.Errorf("tokens-file line = %q, want %q in it", got.Line, want)
		}
	}
	if strings.Contains(got.Line, got.Token) {
		t.Errorf("tokens-file line %q holds the token itself", got.Line)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no tenant", []string{"token", "mint"}, "--tenant"},
		{"bad role", []string{"--tenant", "a", "token", "mint", "--role", "root"}, "role"},
		{"no subcommand", []string{"--tenant", "a", "token"}, "mint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(ctx, t, nil, tc.args...)
			if r.code != ExitUsage || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("idemctl %v = exit %d, stderr %q; want exit %d naming %q", tc.args, r.code, r.stderr, ExitUsage, tc.want)
			}
		})
	}
}

// TestRecordTextIsQuoted: a result message is the caller's text; printed
// raw, a newline or an escape sequence in it forged rows of the record
// table on an operator's terminal.
func TestRecordTextIsQuoted(t *testing.T) {
	ctx := testContext(t)
	addr := startServer(t)
	mustRun(ctx, t, addr, "reserve", "pay", "order-1", "--fingerprint", "f")
	mustRun(ctx, t, addr, "complete", "pay", "order-1", "1", "--code", "13",
		"--message", "boom\nstate  RELEASED\nresult code  0\x1b[2K")
	out := mustRun(ctx, t, addr, "lookup", "pay", "order-1")
	if n := strings.Count(out, "\nstate "); n != 1 || strings.ContainsRune(out, 0x1b) {
		t.Fatalf("lookup shows %d state rows, raw ESC %v:\n%s", n, strings.ContainsRune(out, 0x1b), out)
	}
}
