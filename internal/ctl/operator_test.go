package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// TestKeysAddressable: keys are printable text, spaces and quotes included;
// shown raw, "a" and "a " looked the same and a key with two spaces forged
// table columns. Each key shown must paste back as one shell argument.
func TestKeysAddressable(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh to read the keys back")
	}
	ctx := testContext(t)
	addr := startServer(t)
	keys := []string{"a", "a ", "with  space  RELEASED", `it's`, `q"uote`, "uni-ключ", "$HOME", "order-7"}
	for _, k := range keys {
		mustRun(ctx, t, addr, "reserve", "ns", "--", k)
	}
	unquote := func(shown string) string {
		out, err := exec.CommandContext(ctx, sh, "-c", "printf %s "+shown).Output()
		if err != nil {
			t.Fatalf("sh cannot read %s back: %v", shown, err)
		}
		return string(out)
	}
	// One row per key; the key is the second column, up to the state.
	rows := regexp.MustCompile(`(?m)^ns +(.+?) +IN_PROGRESS +1 `).FindAllStringSubmatch(mustRun(ctx, t, addr, "list", "ns"), -1)
	if len(rows) != len(keys) {
		t.Fatalf("list shows %d rows, want %d", len(rows), len(keys))
	}
	seen := map[string]bool{}
	for _, m := range rows {
		seen[unquote(m[1])] = true
	}
	for _, k := range keys {
		if !seen[k] {
			t.Errorf("list shows no key that reads back as %q; rows %q", k, rows)
		}
		if got := unquote(field(t, mustRun(ctx, t, addr, "lookup", "ns", "--", k), "key")); got != k {
			t.Errorf("lookup %q shows a key that reads back as %q", k, got)
		}
	}
	r := run(ctx, t, nil, "--addr", addr, "delete", "n s", "a ")
	if want := "idemctl: no record 'n s'/'a '\n"; r.code != ExitFailed || r.stderr != want {
		t.Errorf("delete of a missing key: exit %d stderr %q, want 1 and %q", r.code, r.stderr, want)
	}
}

// TestCompleteCodeRange: --code was cast to int32, so 4294967296 stored a
// failure's result as OK (code 0).
func TestCompleteCodeRange(t *testing.T) {
	ctx := testContext(t)
	addr := startServer(t)
	mustRun(ctx, t, addr, "reserve", "ns", "k")
	r := run(ctx, t, nil, "--addr", addr, "complete", "ns", "k", "1", "--code", "4294967296")
	if r.code != ExitUsage || !strings.HasPrefix(r.stderr, "idemctl: --code 4294967296: ") {
		t.Fatalf("complete --code 4294967296: exit %d stderr %q, want exit 2 naming --code", r.code, r.stderr)
	}
	if got := field(t, mustRun(ctx, t, addr, "lookup", "ns", "k"), "state"); got != "IN_PROGRESS" {
		t.Fatalf("after a refused complete the record is %s, want IN_PROGRESS", got)
	}
}

// TestTokenMintExpiry: the expiry was truncated to the second, so a token
// minted with --expires 1500ms expired before 1.5 s, and one of under a
// second could be minted already expired.
func TestTokenMintExpiry(t *testing.T) {
	ctx := testContext(t)
	start := time.Now()
	r := run(ctx, t, nil, "--tenant", "a", "token", "mint", "--expires", "1500ms", "-o", "json")
	if r.code != 0 {
		t.Fatalf("token mint: exit %d stderr %q", r.code, r.stderr)
	}
	var got struct {
		Line string `json:"tokens_file_line"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`expires=(\S+)`).FindStringSubmatch(got.Line)
	if m == nil {
		t.Fatalf("tokens-file line %q has no expiry", got.Line)
	}
	exp, err := time.Parse(time.RFC3339, m[1])
	if err != nil {
		t.Fatal(err)
	}
	if exp.Before(start.Add(1500 * time.Millisecond)) {
		t.Fatalf("--expires 1500ms at %s wrote expires=%s, earlier than asked", start.UTC().Format(time.RFC3339Nano), m[1])
	}
}

// TestJSONIsStable: protojson adds random spaces (differing between builds)
// so that nobody depends on its bytes; scripts grep idemctl's output.
func TestJSONIsStable(t *testing.T) {
	ctx := testContext(t)
	addr := startServer(t)
	mustRun(ctx, t, addr, "reserve", "ns", "k")
	for _, args := range [][]string{{"lookup", "ns", "k"}, {"list", "ns"}, {"stats"}, {"health"}} {
		out := mustRun(ctx, t, addr, append([]string{"-o", "json"}, args...)...)
		var canon bytes.Buffer
		if err := json.Indent(&canon, []byte(out), "", "  "); err != nil {
			t.Fatalf("%v -o json is not JSON: %v\n%s", args, err, out)
		}
		if canon.String() != out {
			t.Errorf("%v -o json is not in canonical indentation:\n%s", args, out)
		}
	}
}

// TestJSONFieldsAlwaysPresent: protojson leaves zero values out, so an empty
// list printed {} (jq '.records[]' failed on it) and an OK result had no
// "code" at all.
func TestJSONFieldsAlwaysPresent(t *testing.T) {
	ctx := testContext(t)
	addr := startServer(t)
	var list map[string]json.RawMessage
	if err := json.Unmarshal([]byte(mustRun(ctx, t, addr, "-o", "json", "list", "empty")), &list); err != nil {
		t.Fatal(err)
	}
	if got := string(list["records"]); got != "[]" {
		t.Errorf("list of an empty namespace: records = %q, want []", got)
	}
	mustRun(ctx, t, addr, "reserve", "ns", "k")
	mustRun(ctx, t, addr, "complete", "ns", "k", "1", "--body", "ok")
	var rec struct {
		Record struct {
			Result map[string]json.RawMessage `json:"result"`
		} `json:"record"`
	}
	if err := json.Unmarshal([]byte(mustRun(ctx, t, addr, "-o", "json", "lookup", "ns", "k")), &rec); err != nil {
		t.Fatal(err)
	}
	if got := string(rec.Record.Result["code"]); got != "0" {
		t.Errorf("an OK result's code = %q, want 0", got)
	}
}

// TestListShowsLease: an operator deciding on a force-release needs the
// lease of an IN_PROGRESS record; other states have none to show.
func TestListShowsLease(t *testing.T) {
	ctx := testContext(t)
	addr := startServer(t)
	mustRun(ctx, t, addr, "reserve", "ns", "held", "--lease", "90s")
	mustRun(ctx, t, addr, "reserve", "ns", "done")
	mustRun(ctx, t, addr, "complete", "ns", "done", "1")
	out := mustRun(ctx, t, addr, "list", "ns")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], " LEASE ") {
		t.Fatalf("list =\n%s\nwant a LEASE column and two rows", out)
	}
	lease := field(t, mustRun(ctx, t, addr, "lookup", "ns", "held"), "lease expires")
	for _, l := range lines[1:] {
		switch f := strings.Fields(l); f[1] {
		case "held":
			if f[6] != lease {
				t.Errorf("held's LEASE = %s, want %s", f[6], lease)
			}
		case "done":
			if f[6] != "-" {
				t.Errorf("done's LEASE = %s, want -", f[6])
			}
		}
	}
}

// deadlineServer answers every Reserve IN_PROGRESS and reports how long
// the call had left.
type deadlineServer struct {
	idemv1.UnimplementedIdempotencyServiceServer
	left chan time.Duration
}

func (s *deadlineServer) Reserve(ctx context.Context, _ *idemv1.ReserveRequest) (*idemv1.ReserveResponse, error) {
	d, ok := ctx.Deadline()
	if !ok {
		d = time.Now().Add(time.Hour)
	}
	s.left <- time.Until(d)
	return &idemv1.ReserveResponse{Outcome: idemv1.ReserveOutcome_RESERVE_OUTCOME_IN_PROGRESS}, nil
}

// TestReserveWaitOutlastsTimeout: the call's deadline was --timeout (10s)
// alone, so --wait 25s answered IN_PROGRESS after 10s without a word.
func TestReserveWaitOutlastsTimeout(t *testing.T) {
	ctx := testContext(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &deadlineServer{left: make(chan time.Duration, 1)}
	gs := grpc.NewServer()
	idemv1.RegisterIdempotencyServiceServer(gs, srv)
	var wg sync.WaitGroup
	wg.Go(func() { _ = gs.Serve(lis) })
	t.Cleanup(func() { gs.Stop(); wg.Wait() })

	if r := run(ctx, t, nil, "--addr", lis.Addr().String(), "reserve", "ns", "k", "--wait", "25s"); r.code != ExitInProgress {
		t.Fatalf("reserve answered IN_PROGRESS: exit %d, stderr %q; want %d", r.code, r.stderr, ExitInProgress)
	}
	if left := <-srv.left; left <= 25*time.Second {
		t.Fatalf("Reserve --wait 25s reached the server with %v left, want more than the wait", left)
	}
}
