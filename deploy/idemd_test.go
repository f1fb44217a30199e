package deploy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"gopkg.in/yaml.v3"

	"github.com/idemhq/idem/client"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server/idemd"

	// The extensions cmd/idemd links, so flags and metrics are idemd's.
	_ "github.com/idemhq/idem/server/idemdext"
	_ "github.com/idemhq/idem/server/policy"
	_ "github.com/idemhq/idem/storage/memory"
)

const defaultTestTimeout = 30 * time.Second

// syncBuffer collects idemd's log lines while it runs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startIdemd runs idemd as cmd/idemd does (same extensions), on a memory
// store and loopback ports, and returns its gRPC and metrics addresses.
func startIdemd(t *testing.T) (grpcAddr, metricsAddr string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	done := make(chan int, 1)
	noEnv := func(string) (string, bool) { return "", false }
	go func() {
		done <- idemd.Main(ctx, []string{"--store", "memory://", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"}, noEnv, logs)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	deadline := time.After(defaultTestTimeout)
	for {
		sc := bufio.NewScanner(strings.NewReader(logs.String()))
		for sc.Scan() {
			var raw map[string]any
			if json.Unmarshal(sc.Bytes(), &raw) != nil || raw["msg"] != "idemd serving" {
				continue
			}
			a, _ := raw["addr"].(string)
			m, _ := raw["metrics_addr"].(string)
			return a, m
		}
		select {
		case code := <-done:
			done <- code
			t.Fatalf("idemd exited with %d before serving:\n%s", code, logs.String())
		case <-deadline:
			t.Fatalf("idemd did not log \"idemd serving\":\n%s", logs.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// exercise makes every answer that creates a lazily exported series:
// each Reserve outcome, a takeover, a wait, and LEASE_LOST from every rpc.
func exercise(ctx context.Context, t *testing.T, addr string) {
	t.Helper()
	c, err := client.New("passthrough:///"+addr, client.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const ns = "deploy-test"
	reserve := func(key, fp string, wait time.Duration) *idemv1.ReserveResponse {
		t.Helper()
		req := &idemv1.ReserveRequest{Namespace: ns, Key: key, Fingerprint: []byte(fp)}
		if wait > 0 {
			req.Wait = durationpb.New(wait)
		}
		r, err := c.Reserve(ctx, req)
		if err != nil {
			t.Fatalf("Reserve(%s) error = %v", key, err)
		}
		return r
	}
	tok := reserve("k", "f", 0).GetRecord().GetToken()
	reserve("k", "f", 20*time.Millisecond) // in_progress, after a wait
	reserve("k", "other", 0)               // mismatch
	stale := tok + 10
	lost := []error{}
	_, err = c.Complete(ctx, &idemv1.CompleteRequest{Namespace: ns, Key: "k", Token: stale, Result: &idemv1.Result{}})
	lost = append(lost, err)
	_, err = c.Release(ctx, &idemv1.ReleaseRequest{Namespace: ns, Key: "k", Token: stale})
	lost = append(lost, err)
	_, err = c.ExtendLease(ctx, &idemv1.ExtendLeaseRequest{Namespace: ns, Key: "k", Token: stale})
	lost = append(lost, err)
	_, err = c.Checkpoint(ctx, &idemv1.CheckpointRequest{Namespace: ns, Key: "k", Token: stale, Phase: "p"})
	lost = append(lost, err)
	for _, err := range lost {
		if err == nil {
			t.Fatal("a call with a stale token succeeded; want LEASE_LOST")
		}
	}
	if _, err := c.BatchComplete(ctx, &idemv1.BatchCompleteRequest{Namespace: ns, Items: []*idemv1.BatchCompleteRequest_Item{{Key: "k", Token: stale, Result: &idemv1.Result{}}}}); err != nil {
		t.Fatalf("BatchComplete() error = %v", err)
	}
	if _, err := c.Release(ctx, &idemv1.ReleaseRequest{Namespace: ns, Key: "k", Token: tok}); err != nil {
		t.Fatalf("Release() error = %v", err)
	}
	tok = reserve("k", "f", 0).GetRecord().GetToken() // a takeover
	if _, err := c.Complete(ctx, &idemv1.CompleteRequest{Namespace: ns, Key: "k", Token: tok, Result: &idemv1.Result{}}); err != nil {
		t.Fatalf("Complete() error = %v", err)
	}
	reserve("k", "f", 0) // completed
}

// series are a scrape's families: name → label → values seen.
type series map[string]map[string]map[string]bool

var (
	sampleRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s`)
	pairRE   = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
)

func scrape(ctx context.Context, t *testing.T, addr string) series {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := series{}
	for line := range strings.SplitSeq(string(body), "\n") {
		m := sampleRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		labels := out[m[1]]
		if labels == nil {
			labels = map[string]map[string]bool{}
			out[m[1]] = labels
		}
		for _, p := range pairRE.FindAllStringSubmatch(m[2], -1) {
			if labels[p[1]] == nil {
				labels[p[1]] = map[string]bool{}
			}
			labels[p[1]][p[2]] = true
		}
	}
	return out
}

// pebbleOnly are families a memory store does not export; their labels
// come from server/observe instead.
var pebbleOnly = []string{"idem_store_filter_bytes", "idem_store_filter_answered_total"}

var matcherValueRE = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"`)

// realProblems checks expr against what a running idemd exports: every
// metric it names, every label it selects on, and every label value it
// spells out (each alternative of a regex), so a misspelt value such as
// op="Reserve" or grpc_code="Unavailble", which selects nothing and keeps
// an alert silent, is reported.
func realProblems(where, expr string, got series) []string {
	var out []string
	for _, m := range selectorRE.FindAllStringSubmatch(expr, -1) {
		name, sel := m[1], m[2]
		if name == "up" {
			continue
		}
		fam, ok := got[name]
		if !ok {
			if !slices.Contains(pebbleOnly, name) {
				out = append(out, where+": idemd exports no series "+name)
			}
			continue
		}
		for _, mv := range matcherValueRE.FindAllStringSubmatch(sel, -1) {
			label, op, value := mv[1], mv[2], strings.ReplaceAll(mv[3], `\\`, `\`)
			switch label {
			case "job", "instance", "namespace":
				continue // the scrape's and the callers', not idemd's
			}
			values, ok := fam[label]
			if !ok {
				out = append(out, where+": "+name+" has no label "+label)
				continue
			}
			if strings.Contains(value, "$") {
				continue
			}
			var alts []string
			if op == "=~" || op == "!~" {
				alts = strings.Split(value, "|")
			} else {
				alts = []string{regexp.QuoteMeta(value)}
			}
			for _, alt := range alts {
				re, err := regexp.Compile("^(?:" + alt + ")$")
				if err != nil {
					out = append(out, where+": bad regex "+alt)
					continue
				}
				if !slices.ContainsFunc(slices.Collect(maps.Keys(values)), re.MatchString) {
					out = append(out, where+": "+name+"{"+label+op+`"`+value+`"}: no series has `+label+" matching "+alt)
				}
			}
		}
	}
	return out
}

// TestQueriesMatchRunningIdemd checks the alerts' and the dashboard's
// queries against the /metrics of a running idemd, label values included.
func TestQueriesMatchRunningIdemd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	grpcAddr, metricsAddr := startIdemd(t)
	exercise(ctx, t, grpcAddr)
	got := scrape(ctx, t, metricsAddr)

	exprs := map[string]string{}
	data, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Rules []struct{ Alert, Expr string }
		}
	}
	if err := yaml.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			exprs["alert "+r.Alert] = r.Expr
		}
	}
	data, err = os.ReadFile("grafana/idem.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct{ Panels []panel }
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			for i, tg := range p.Targets {
				exprs["panel "+p.Title+" #"+string(rune('A'+i))] = tg.Expr
			}
		}
	}
	walk(dash.Panels)
	for where, expr := range exprs {
		for _, p := range realProblems(where, expr, got) {
			t.Error(p)
		}
	}
}

// TestRealProblemsCatchesDrift keeps the checker honest.
func TestRealProblemsCatchesDrift(t *testing.T) {
	got := series{
		"idem_store_errors_total":   {"op": {"ping": true, "reserve": true}, "store": {"memory": true}},
		"grpc_server_handled_total": {"grpc_code": {"OK": true, "Unavailable": true}},
	}
	for _, expr := range []string{
		`rate(idem_store_errors_total{op="Reserve"}[5m])`,
		`rate(idem_store_errors_total{op=~"ping|reserv"}[5m])`,
		`rate(grpc_server_handled_total{grpc_code=~"Unavailble"}[5m])`,
		`rate(idem_store_errors_total{kind="x"}[5m])`,
		`rate(idem_nonexistent_total[5m])`,
	} {
		if p := realProblems("test", expr, got); len(p) == 0 {
			t.Errorf("realProblems(%q) = none, want the drift reported", expr)
		}
	}
	if p := realProblems("test", `rate(idem_store_errors_total{op=~"ping|reserve", store="memory", instance=~"$instance"}[5m])`, got); len(p) != 0 {
		t.Errorf("realProblems(valid expr) = %v, want none", p)
	}
}

var idemEnvRE = regexp.MustCompile(`\bIDEM_[A-Z0-9_]+\b`)

// idemd ignores an IDEM_* variable that names no flag, so a misspelt one
// in a manifest silently leaves the default in force.
func TestIdemEnvNamesAreFlags(t *testing.T) {
	var usage syncBuffer
	idemd.Main(context.Background(), []string{"-h"}, func(string) (string, bool) { return "", false }, &usage)
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+-([a-z0-9-]+)`).FindAllStringSubmatch(usage.String(), -1) {
		flags[idemd.EnvName(m[1])] = true
	}
	if !flags["IDEM_STORE"] || !flags["IDEM_INSECURE"] {
		t.Fatalf("idemd -h lists no --store or --insecure; the usage parser is broken:\n%s", usage.String())
	}
	sources := map[string]string{"rendered deploy/k8s/base": string(renderBase(t))}
	for _, path := range []string{"Dockerfile", "compose.yaml", "k8s/base/idemd.env", "k8s/base/deployment.yaml", "k8s/base/migrate-job.yaml", "k8s/base/kustomization.yaml", "../docs/operations.md"} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		sources[path] = string(data)
	}
	// idemctl's own, and the tests'.
	other := map[string]bool{"IDEM_ADDR": true, "IDEM_TOKEN": true}
	for where, text := range sources {
		for _, name := range idemEnvRE.FindAllString(text, -1) {
			if !flags[name] && !other[name] && !strings.HasPrefix(name, "IDEM_TEST_") {
				t.Errorf("%s sets or names %s, which is no idemd flag's variable (idemd ignores it)", where, name)
			}
		}
	}
}
