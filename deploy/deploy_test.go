package deploy

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/server/observe"
	"github.com/idemhq/idem/server/policy"
)

// known returns every metric family idemd exports and its label names.
func known(t *testing.T) map[string][]string {
	t.Helper()
	names := map[string][]string{}
	for n, labels := range observe.MetricLabels {
		names[n] = labels
	}
	for _, n := range slices.Concat(observe.MetricNames, observe.GRPCMetricNames) {
		if _, ok := names[n]; !ok {
			t.Fatalf("observe.MetricLabels lacks %s", n)
		}
	}
	// The Go and process collectors, as registered.
	mfs, err := observe.NewRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if _, ok := names[mf.GetName()]; !ok {
			var labels []string
			if len(mf.GetMetric()) > 0 {
				for _, l := range mf.GetMetric()[0].GetLabel() {
					labels = append(labels, l.GetName())
				}
			}
			names[mf.GetName()] = labels
		}
	}
	names["up"] = nil // Prometheus' own
	return names
}

var (
	// A metric name of idem's families, with its selector if any.
	selectorRE = regexp.MustCompile(`\b((?:idem|grpc_server|go|process)_[a-zA-Z0-9_]+|up)\b\s*(\{[^}]*\})?`)
	matcherRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	groupingRE = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	// Labels every scraped series has or that histograms add.
	targetLabels = []string{"instance", "job"}
)

// checkExpr reports every metric or label expr uses that idemd does not export.
func checkExpr(t *testing.T, where, expr string, names map[string][]string) {
	t.Helper()
	for _, p := range problems(where, expr, names) {
		t.Error(p)
	}
}

func problems(where, expr string, names map[string][]string) []string {
	var out []string
	errorf := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	var allowed []string
	found := 0
	for _, m := range selectorRE.FindAllStringSubmatch(expr, -1) {
		name, sel := m[1], m[2]
		base, histo := name, false
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(name, suf); ok && strings.HasSuffix(b, "_seconds") {
				base, histo = b, true
			}
		}
		labels, ok := names[base]
		if !ok {
			errorf("%s: metric %s is not registered by idemd (expr %q)", where, name, expr)
			continue
		}
		found++
		labels = slices.Concat(labels, targetLabels)
		if histo && strings.HasSuffix(name, "_bucket") {
			labels = append(labels, "le")
		}
		allowed = append(allowed, labels...)
		for _, lm := range matcherRE.FindAllStringSubmatch(sel, -1) {
			if !slices.Contains(labels, lm[1]) {
				errorf("%s: %s has no label %q (has %v)", where, name, lm[1], labels)
			}
		}
	}
	if found == 0 && !strings.Contains(expr, "label_values") {
		errorf("%s: expr names no idemd metric: %q", where, expr)
	}
	for _, g := range groupingRE.FindAllStringSubmatch(expr, -1) {
		for l := range strings.SplitSeq(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" && !slices.Contains(allowed, l) {
				errorf("%s: groups by %q, a label none of its metrics has (expr %q)", where, l, expr)
			}
		}
	}
	return out
}

func TestAlertsUseIdemMetrics(t *testing.T) {
	names := known(t)
	data, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Name  string
			Rules []struct {
				Alert, Expr string
				Labels      map[string]string
				Annotations map[string]string
			}
		}
	}
	if err := yaml.Unmarshal(data, &file); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	var alerts []string
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			checkExpr(t, "alert "+r.Alert, r.Expr, names)
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("alert %s lacks a severity label or a summary", r.Alert)
			}
		}
	}
	// The issue asks for these; docs/operations.md explains each alert.
	runbook, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"IdemHighErrorRate", "IdemHighLatencyP99", "IdemStoreDown", "IdemLeaseLostRate"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alerts.yml lacks %s", want)
		}
	}
	for _, a := range alerts {
		if !strings.Contains(string(runbook), "### "+a) {
			t.Errorf("docs/operations.md has no section \"### %s\"", a)
		}
	}
}

type panel struct {
	Title   string
	Panels  []panel
	Targets []struct{ Expr string }
}

func TestDashboardUsesIdemMetrics(t *testing.T) {
	names := known(t)
	data, err := os.ReadFile("grafana/idem.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID        string
		Panels     []panel
		Templating struct {
			List []struct {
				Name       string
				Definition string
			}
		}
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("idem.json: %v", err)
	}
	n := 0
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			for _, tg := range p.Targets {
				n++
				checkExpr(t, "panel "+p.Title, tg.Expr, names)
			}
		}
	}
	walk(dash.Panels)
	if n < 10 {
		t.Errorf("dashboard has %d queries, want the whole set", n)
	}
	for _, v := range dash.Templating.List {
		if v.Definition != "" {
			checkExpr(t, "variable "+v.Name, v.Definition, names)
		}
	}
	// Every idem metric is on the dashboard.
	for _, m := range observe.MetricNames {
		if !strings.Contains(string(data), m) {
			t.Errorf("dashboard does not show %s", m)
		}
	}
}

// TestCheckExprCatchesDrift keeps the checker honest.
func TestCheckExprCatchesDrift(t *testing.T) {
	names := known(t)
	for _, expr := range []string{
		`rate(idem_reserve_outcome_total[5m])`,                  // misspelt
		`rate(idem_waits_total{outcomes="x"}[5m])`,              // wrong label
		`sum by (tenant) (rate(idem_takeovers_total[5m]))`,      // label it does not have
		`rate(idem_waits_total_bucket[5m])`,                     // not a histogram
		`rate(grpc_server_handled_total{grpc_status="OK"}[1m])`, // wrong label
	} {
		if p := problems("test", expr, names); len(p) == 0 {
			t.Errorf("problems(%q) = none, want the drift reported", expr)
		}
	}
	if p := problems("test", `sum by (le, op) (rate(idem_store_op_duration_seconds_bucket{store="x"}[5m]))`, names); len(p) != 0 {
		t.Errorf("problems(valid expr) = %v, want none", p)
	}
}

// renderBase renders deploy/k8s/base with kustomize (make bin/kustomize
// builds the version pinned in tools/go.mod) or kubectl's built-in copy.
func renderBase(t *testing.T) []byte {
	t.Helper()
	var cmd *exec.Cmd
	if p, err := exec.LookPath("kustomize"); err == nil {
		cmd = exec.Command(p, "build", "k8s/base")
	} else if p, err := exec.LookPath("kubectl"); err == nil {
		cmd = exec.Command(p, "kustomize", "k8s/base")
	} else {
		if os.Getenv("CI") != "" {
			t.Fatalf("neither kustomize nor kubectl found; CI must check that deploy/k8s/base renders (make bin/kustomize)")
		}
		t.Skip("neither kustomize nor kubectl found; run make bin/kustomize and put bin/ on PATH to check that deploy/k8s/base renders")
	}
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, stderr)
	}
	return out
}

func TestKustomizeBaseRenders(t *testing.T) {
	out := renderBase(t)
	kinds := map[string]int{}
	dec := yaml.NewDecoder(strings.NewReader(string(out)))
	for {
		var doc struct {
			Kind     string
			Metadata struct{ Name string }
			Spec     struct {
				Ingress []struct {
					From []struct {
						PodSelector *struct {
							MatchLabels map[string]string `yaml:"matchLabels"`
						} `yaml:"podSelector"`
					}
				}
				Template struct {
					Spec struct {
						Containers []struct {
							Image          string
							ReadinessProbe map[string]any `yaml:"readinessProbe"`
							StartupProbe   map[string]any `yaml:"startupProbe"`
						}
						SecurityContext struct {
							RunAsNonRoot bool `yaml:"runAsNonRoot"`
						} `yaml:"securityContext"`
					}
				}
			}
		}
		if err := dec.Decode(&doc); err != nil {
			break
		}
		kinds[doc.Kind]++
		if doc.Kind == "NetworkPolicy" {
			// Clients carry only the documented label, not idemd's own.
			for _, in := range doc.Spec.Ingress {
				for _, f := range in.From {
					if f.PodSelector != nil && !maps.Equal(f.PodSelector.MatchLabels, map[string]string{"idem.dev/client": "true"}) {
						t.Errorf("NetworkPolicy %s admits pods labelled %v, want only idem.dev/client=true", doc.Metadata.Name, f.PodSelector.MatchLabels)
					}
				}
			}
		}
		if doc.Kind == "Deployment" {
			c := doc.Spec.Template.Spec.Containers[0]
			if c.ReadinessProbe["grpc"] == nil || c.StartupProbe["grpc"] == nil {
				t.Errorf("Deployment probes = %v, %v; want gRPC health probes", c.ReadinessProbe, c.StartupProbe)
			}
			if !doc.Spec.Template.Spec.SecurityContext.RunAsNonRoot {
				t.Errorf("Deployment does not require a non-root user")
			}
		}
	}
	for _, k := range []string{"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy", "Job", "ConfigMap", "ServiceAccount"} {
		if kinds[k] == 0 {
			t.Errorf("rendered base has no %s (kinds %v)", k, kinds)
		}
	}
}

func TestComposeAndPrometheusConfig(t *testing.T) {
	var compose struct {
		Services map[string]struct {
			Image   string
			Command any
		}
	}
	data, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	for _, s := range []string{"crdb-1", "crdb-2", "crdb-3", "crdb-init", "migrate", "idemd-1", "idemd-2", "prometheus", "grafana"} {
		if _, ok := compose.Services[s]; !ok {
			t.Errorf("compose.yaml has no service %s", s)
		}
	}
	var prom struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName string `yaml:"job_name"`
		} `yaml:"scrape_configs"`
	}
	data, err = os.ReadFile("prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &prom); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	if !slices.Contains(prom.RuleFiles, "alerts.yml") {
		t.Errorf("prometheus.yml rule_files = %v, want alerts.yml", prom.RuleFiles)
	}
	// The alerts select job="idemd".
	if !slices.ContainsFunc(prom.ScrapeConfigs, func(s struct {
		JobName string `yaml:"job_name"`
	}) bool {
		return s.JobName == "idemd"
	}) {
		t.Errorf("prometheus.yml has no idemd job")
	}
}

func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	final := s[strings.LastIndex(s, "\nFROM "):]
	for _, want := range []string{"CGO_ENABLED=0", "./cmd/idemd", "./cmd/idemctl"} {
		if !strings.Contains(s, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	// The linker ignores -X for a variable that does not exist, so a wrong
	// path leaves the image reporting "devel".
	var targets []string
	for _, m := range regexp.MustCompile(`-X\s+([^=\s"]+)=`).FindAllStringSubmatch(s, -1) {
		targets = append(targets, m[1])
		if !hasStringVar(t, m[1]) {
			t.Errorf("Dockerfile sets -X %s, a variable that does not exist", m[1])
		}
	}
	for _, want := range []string{"github.com/idemhq/idem/server/idemd.version", "github.com/idemhq/idem/internal/ctl.Version"} {
		if !slices.Contains(targets, want) {
			t.Errorf("Dockerfile does not set %s (sets %v)", want, targets)
		}
	}
	user := regexp.MustCompile(`(?m)^USER\s+(\S+)`).FindStringSubmatch(final)
	if user == nil || strings.HasPrefix(user[1], "0") || strings.HasPrefix(user[1], "root") {
		t.Errorf("final stage USER = %v, want a non-root user", user)
	}
}

// hasStringVar reports whether target (import/path.name, as -X takes it)
// is a package-level variable of this module; "main" means both commands.
func hasStringVar(t *testing.T, target string) bool {
	t.Helper()
	i := strings.LastIndex(target, ".")
	pkg, name := target[:i], target[i+1:]
	dirs := []string{"../cmd/idemd", "../cmd/idemctl"}
	if pkg != "main" {
		rel, ok := strings.CutPrefix(pkg, "github.com/idemhq/idem/")
		if !ok {
			return false
		}
		dirs = []string{"../" + rel}
	}
	for _, dir := range dirs {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil || len(files) == 0 {
			return false
		}
		found := false
		for _, path := range files {
			if strings.HasSuffix(path, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range f.Decls {
				if g, ok := d.(*ast.GenDecl); ok && g.Tok == token.VAR {
					for _, sp := range g.Specs {
						found = found || slices.ContainsFunc(sp.(*ast.ValueSpec).Names, func(n *ast.Ident) bool { return n.Name == name })
					}
				}
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// TestPolicyExample parses policy.example.yaml and checks that the methods
// of a service with an exact pattern share that pattern's store: the
// interceptors name a namespace after the full method ("/pkg.Svc/Method"),
// so the service's other methods must not fall through to default.
func TestPolicyExample(t *testing.T) {
	f, err := policy.ReadFile("policy.example.yaml", server.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	route := func(ns string) policy.Rule {
		var best *policy.Rule
		for i, r := range f.Rules {
			switch {
			case r.Kind == policy.Exact && r.Match == ns:
				return r
			case r.Kind == policy.Prefix && strings.HasPrefix(ns, r.Match) && (best == nil || best.Kind == policy.Default || len(r.Match) > len(best.Match)),
				r.Kind == policy.Default && best == nil:
				best = &f.Rules[i]
			}
		}
		if best == nil {
			t.Fatalf("no rule routes %q", ns)
		}
		return *best
	}
	n := 0
	for _, r := range f.Rules {
		svc, _, ok := strings.Cut(strings.TrimPrefix(r.Match, "/"), "/")
		if r.Kind != policy.Exact || !strings.HasPrefix(r.Match, "/") || !ok {
			continue
		}
		n++
		sibling := "/" + svc + "/Refund"
		if got := route(sibling); got.Store != r.Store {
			t.Errorf("%s goes to %q (pattern %q), not to %s's store %q", sibling, got.Store, got.Pattern, r.Match, r.Store)
		}
	}
	if n == 0 {
		t.Error("policy.example.yaml has no exact gRPC method pattern; the test checked nothing")
	}
}
