package deploy

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"gopkg.in/yaml.v3"
)

// k8sObject is the part of a rendered object these tests read.
type k8sObject struct {
	Kind     string
	Metadata struct {
		Name string
	}
	Data map[string]string
	Spec struct {
		Replicas       *int
		MinAvailable   any `yaml:"minAvailable"`
		MaxUnavailable any `yaml:"maxUnavailable"`
		ScaleTargetRef struct {
			Kind, Name string
		} `yaml:"scaleTargetRef"`
		Template struct {
			Metadata struct {
				Labels      map[string]string
				Annotations map[string]string
			}
			Spec struct {
				Containers []container
			}
		}
	}
}

type container struct {
	Name    string
	EnvFrom []struct {
		ConfigMapRef *struct{ Name string } `yaml:"configMapRef"`
		SecretRef    *struct{ Name string } `yaml:"secretRef"`
	} `yaml:"envFrom"`
	Env []struct {
		Name  string
		Value string
	}
	Ports []struct {
		Name          string
		ContainerPort int `yaml:"containerPort"`
	}
	Resources struct {
		Limits map[string]string
	}
}

func renderedObjects(t *testing.T) []k8sObject {
	t.Helper()
	dec := yaml.NewDecoder(strings.NewReader(string(renderBase(t))))
	var objs []k8sObject
	for {
		var o k8sObject
		if err := dec.Decode(&o); err != nil {
			break
		}
		objs = append(objs, o)
	}
	if len(objs) == 0 {
		t.Fatal("kustomize rendered no objects")
	}
	return objs
}

func find(objs []k8sObject, kind, name string) *k8sObject {
	for i := range objs {
		if objs[i].Kind == kind && (name == "" || objs[i].Metadata.Name == name) {
			return &objs[i]
		}
	}
	return nil
}

// A Deployment an HPA scales must not set replicas: every kubectl apply
// (each rollout) would otherwise set the count back to the manifest's,
// scaling a scaled-out idemd down under load.
func TestHPAOwnsReplicas(t *testing.T) {
	objs := renderedObjects(t)
	n := 0
	for _, o := range objs {
		if o.Kind != "HorizontalPodAutoscaler" {
			continue
		}
		n++
		d := find(objs, o.Spec.ScaleTargetRef.Kind, o.Spec.ScaleTargetRef.Name)
		if d == nil {
			t.Errorf("HPA %s scales %s %s, which the base does not have", o.Metadata.Name, o.Spec.ScaleTargetRef.Kind, o.Spec.ScaleTargetRef.Name)
			continue
		}
		if d.Spec.Replicas != nil {
			t.Errorf("%s %s sets replicas: %d, but HPA %s owns its count; kubectl apply would reset it", d.Kind, d.Metadata.Name, *d.Spec.Replicas, o.Metadata.Name)
		}
	}
	if n == 0 {
		t.Error("rendered base has no HorizontalPodAutoscaler")
	}
}

// A drain of a scaled-out idemd takes one replica at a time: minAvailable: 1
// would let it evict all but one.
func TestPDBTakesOneAtATime(t *testing.T) {
	pdb := find(renderedObjects(t), "PodDisruptionBudget", "idemd")
	if pdb == nil {
		t.Fatal("rendered base has no PodDisruptionBudget idemd")
	}
	if pdb.Spec.MinAvailable != nil || fmt.Sprint(pdb.Spec.MaxUnavailable) != "1" {
		t.Errorf("PodDisruptionBudget minAvailable %v, maxUnavailable %v; want maxUnavailable: 1 alone", pdb.Spec.MinAvailable, pdb.Spec.MaxUnavailable)
	}
}

var envRefRE = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// Kubernetes expands $(NAME) in an env value only from variables defined
// before it (envFrom, then the env entries above); any other reference
// stays as literal text.
func TestEnvReferencesResolve(t *testing.T) {
	objs := renderedObjects(t)
	for _, o := range objs {
		for _, c := range o.Spec.Template.Spec.Containers {
			defined := map[string]bool{}
			for _, ef := range c.EnvFrom {
				if ef.ConfigMapRef != nil {
					if cm := find(objs, "ConfigMap", ef.ConfigMapRef.Name); cm != nil {
						for k := range cm.Data {
							defined[k] = true
						}
					}
				}
				if ef.SecretRef != nil {
					defined["IDEM_STORE"] = true // the Secret the base asks for holds IDEM_STORE
				}
			}
			for _, e := range c.Env {
				for _, m := range envRefRE.FindAllStringSubmatch(e.Value, -1) {
					if !defined[m[1]] {
						t.Errorf("%s %s container %s: env %s refers to $(%s), not defined before it; Kubernetes passes the text unexpanded", o.Kind, o.Metadata.Name, c.Name, e.Name, m[1])
					}
				}
				defined[e.Name] = true
			}
		}
	}
}

// quantity parses a Kubernetes memory quantity or a GOMEMLIMIT value
// (binary suffixes only, as the base uses) into bytes.
func quantity(t *testing.T, s string) int64 {
	t.Helper()
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"B", 1}, {"", 1}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			if err != nil {
				t.Fatalf("quantity %q: %v", s, err)
			}
			return v * u.mult
		}
	}
	panic("unreachable")
}

// idemd collects garbage at GOGC 400 by default; in a container with a
// memory limit, GOMEMLIMIT below that limit must bound the heap instead of
// the OOM killer.
func TestGOMEMLIMITUnderMemoryLimit(t *testing.T) {
	d := find(renderedObjects(t), "Deployment", "idemd")
	if d == nil {
		t.Fatal("rendered base has no Deployment idemd")
	}
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name != "idemd" {
			continue
		}
		limit, ok := c.Resources.Limits["memory"]
		if !ok {
			t.Fatal("idemd container has no memory limit")
		}
		i := slices.IndexFunc(c.Env, func(e struct{ Name, Value string }) bool { return e.Name == "GOMEMLIMIT" })
		if i < 0 {
			t.Fatalf("idemd container has memory limit %s but no GOMEMLIMIT; at GOGC 400 its heap may grow past the limit", limit)
		}
		soft, hard := quantity(t, c.Env[i].Value), quantity(t, limit)
		if soft >= hard || soft < hard/2 {
			t.Errorf("GOMEMLIMIT %s against memory limit %s; want below it, with a little room (about 7/8)", c.Env[i].Value, limit)
		}
		return
	}
	t.Fatal("Deployment idemd has no container idemd")
}

type relabelRule struct {
	SourceLabels []string `yaml:"source_labels"`
	Separator    *string
	Regex        *string
	TargetLabel  string `yaml:"target_label"`
	Replacement  *string
	Action       string
}

type scrapeFile struct {
	ScrapeConfigs []struct {
		JobName        string           `yaml:"job_name"`
		RelabelConfigs []relabelRule    `yaml:"relabel_configs"`
		KubernetesSD   []map[string]any `yaml:"kubernetes_sd_configs"`
	} `yaml:"scrape_configs"`
}

func readScrapeFile(t *testing.T, path string) scrapeFile {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f scrapeFile
	if err := yaml.Unmarshal(data, &f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return f
}

// relabel applies rules to labels as Prometheus does for the actions the
// deploy files use; false means the target was dropped.
func relabel(t *testing.T, rules []relabelRule, labels map[string]string) bool {
	t.Helper()
	for _, r := range rules {
		sep, re, repl := ";", "(.*)", "$1"
		if r.Separator != nil {
			sep = *r.Separator
		}
		if r.Regex != nil {
			re = *r.Regex
		}
		if r.Replacement != nil {
			repl = *r.Replacement
		}
		rx := regexp.MustCompile("^(?:" + re + ")$")
		var vals []string
		for _, l := range r.SourceLabels {
			vals = append(vals, labels[l])
		}
		v := strings.Join(vals, sep)
		switch r.Action {
		case "keep":
			if !rx.MatchString(v) {
				return false
			}
		case "drop":
			if rx.MatchString(v) {
				return false
			}
		case "", "replace":
			if m := rx.FindStringSubmatchIndex(v); m != nil {
				labels[r.TargetLabel] = string(rx.ExpandString(nil, repl, v, m))
			}
		default:
			t.Fatalf("relabel action %q not simulated; extend relabel()", r.Action)
		}
	}
	return true
}

var labelNameRE = regexp.MustCompile(`[^a-zA-Z0-9_]`)

// The Kubernetes scrape job finds exactly the idemd server pods' metrics
// port, names the job as the alerts expect, and adds no target label that
// would rename one of idemd's own labels to exported_<label>.
func TestKubernetesScrapeConfig(t *testing.T) {
	objs := renderedObjects(t)
	f := readScrapeFile(t, "prometheus/kubernetes.yml")
	if len(f.ScrapeConfigs) != 1 || f.ScrapeConfigs[0].JobName != "idemd" || len(f.ScrapeConfigs[0].KubernetesSD) == 0 {
		t.Fatalf("prometheus/kubernetes.yml = %+v, want one kubernetes_sd job named idemd", f.ScrapeConfigs)
	}
	sc := f.ScrapeConfigs[0]

	metricsPort := 0
	if cm := find(objs, "ConfigMap", ""); cm != nil {
		if _, p, err := net.SplitHostPort(cm.Data["IDEM_METRICS_LISTEN"]); err == nil {
			metricsPort, _ = strconv.Atoi(p)
		}
	}
	if metricsPort == 0 {
		t.Fatal("rendered ConfigMap sets no IDEM_METRICS_LISTEN port")
	}

	// Pod service discovery makes one target per container port, and one
	// per container without ports. It also lists pods that ended (phase
	// Failed or Succeeded: an evicted replica stays, with its IP, until it
	// is deleted); scraping one fails for good and IdemDown would page.
	var kept []string
	for _, o := range objs {
		tmpl := o.Spec.Template
		if len(tmpl.Spec.Containers) == 0 {
			continue
		}
		if v := tmpl.Metadata.Annotations["prometheus.io/scrape"]; v == "true" {
			t.Errorf("%s %s asks annotation-driven jobs to scrape it too: each replica would be scraped twice, under two job names", o.Kind, o.Metadata.Name)
		}
		for _, phase := range []string{"Pending", "Running", "Succeeded", "Failed"} {
			for _, c := range tmpl.Spec.Containers {
				base := map[string]string{
					"__meta_kubernetes_namespace":          "idem",
					"__meta_kubernetes_pod_name":           o.Metadata.Name + "-0",
					"__meta_kubernetes_pod_container_name": c.Name,
					"__meta_kubernetes_pod_phase":          phase,
				}
				for k, v := range tmpl.Metadata.Labels {
					base["__meta_kubernetes_pod_label_"+labelNameRE.ReplaceAllString(k, "_")] = v
				}
				type port struct {
					name string
					num  int
				}
				ports := []port{{}}
				if len(c.Ports) > 0 {
					ports = nil
					for _, p := range c.Ports {
						ports = append(ports, port{p.Name, p.ContainerPort})
					}
				}
				for _, p := range ports {
					labels := map[string]string{}
					for k, v := range base {
						labels[k] = v
					}
					if p.num != 0 {
						labels["__meta_kubernetes_pod_container_port_name"] = p.name
						labels["__meta_kubernetes_pod_container_port_number"] = strconv.Itoa(p.num)
					}
					if !relabel(t, sc.RelabelConfigs, labels) {
						continue
					}
					kept = append(kept, fmt.Sprintf("%s/%s:%d/%s", o.Kind, c.Name, p.num, phase))
				}
			}
		}
	}
	want := []string{fmt.Sprintf("Deployment/idemd:%d/Pending", metricsPort), fmt.Sprintf("Deployment/idemd:%d/Running", metricsPort)}
	if !slices.Equal(kept, want) {
		t.Errorf("scrape job idemd keeps targets %v, want %v (the IDEM_METRICS_LISTEN port of server pods that have not ended)", kept, want)
	}

	exported := map[string]bool{}
	for _, labels := range known(t) {
		for _, l := range labels {
			exported[l] = true
		}
	}
	for _, r := range sc.RelabelConfigs {
		if r.TargetLabel != "" && exported[r.TargetLabel] {
			t.Errorf("scrape job idemd sets target label %q, a label idemd exports: Prometheus would rename idemd's to exported_%s", r.TargetLabel, r.TargetLabel)
		}
	}
}

var jobRE = regexp.MustCompile(`\bjob\s*=\s*"([^"]*)"`)

// Every job the alerts and the dashboard select is a job both the compose
// Prometheus and the Kubernetes scrape config define, and IdemDown also
// fires when no such target exists at all (up{job=…} == 0 never does).
func TestAlertJobsAreScraped(t *testing.T) {
	var selected []string
	for _, path := range []string{"prometheus/alerts.yml", "grafana/idem.json"} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range jobRE.FindAllStringSubmatch(strings.ReplaceAll(string(data), `\"`, `"`), -1) {
			if !slices.Contains(selected, m[1]) {
				selected = append(selected, m[1])
			}
		}
	}
	if len(selected) == 0 {
		t.Fatal("alerts and dashboard select no job; IdemDown needs one")
	}
	for _, path := range []string{"prometheus/prometheus.yml", "prometheus/kubernetes.yml"} {
		var jobs []string
		for _, sc := range readScrapeFile(t, path).ScrapeConfigs {
			jobs = append(jobs, sc.JobName)
		}
		for _, j := range selected {
			if !slices.Contains(jobs, j) {
				t.Errorf("alerts or dashboard select job=%q, which %s does not define (has %v)", j, path, jobs)
			}
		}
	}

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
	absentRE := regexp.MustCompile(`absent\(\s*up\{job="idemd"\}\s*\)`)
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			if r.Alert == "IdemDown" {
				if !absentRE.MatchString(r.Expr) {
					t.Errorf("IdemDown = %q; want it to fire on absent(up{job=\"idemd\"}) too, or a missing job goes unnoticed", r.Expr)
				}
				return
			}
		}
	}
	t.Error("alerts.yml has no IdemDown")
}

// TestAlertRuleUnitTests runs the alerts' unit tests (which alert fires on
// which series, and which must not) with promtool: skipped without it,
// except under CI, whose script installs it (Debian's prometheus package).
func TestAlertRuleUnitTests(t *testing.T) {
	p, err := exec.LookPath("promtool")
	if err != nil {
		msg := "promtool not found (Debian: apt-get install prometheus); it runs prometheus/alerts_test.yml"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if out, err := exec.Command(p, "test", "rules", "prometheus/alerts_test.yml").CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules prometheus/alerts_test.yml: %v\n%s", err, out)
	}
}

// probeSpec is the part of a Kubernetes probe these tests read.
type probeSpec struct {
	GRPC *struct {
		Port    int
		Service *string
	} `yaml:"grpc"`
	HTTPGet *struct {
		Port any
		Path string
	} `yaml:"httpGet"`
	PeriodSeconds    int `yaml:"periodSeconds"`
	FailureThreshold int `yaml:"failureThreshold"`
}

// The kubelet's probes ask what idemd answers: the gRPC health service on
// IDEM_LISTEN's port, under a service name it reports SERVING (an unknown
// name is NOT_FOUND, and the pod would never be ready), and /metrics on
// IDEM_METRICS_LISTEN's port. SIGKILL comes after idemd's own shutdown.
func TestProbesAndGraceMatchIdemd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	out := renderBase(t)
	var cfg map[string]string
	var dep struct {
		Spec struct {
			Template struct {
				Spec struct {
					TerminationGracePeriodSeconds *int `yaml:"terminationGracePeriodSeconds"`
					Containers                    []struct {
						Name  string
						Ports []struct {
							Name          string
							ContainerPort int `yaml:"containerPort"`
						}
						StartupProbe   *probeSpec `yaml:"startupProbe"`
						ReadinessProbe *probeSpec `yaml:"readinessProbe"`
						LivenessProbe  *probeSpec `yaml:"livenessProbe"`
					}
				}
			}
		}
	}
	dec := yaml.NewDecoder(strings.NewReader(string(out)))
	for {
		var node yaml.Node
		if err := dec.Decode(&node); err != nil {
			break
		}
		var head struct{ Kind string }
		if err := node.Decode(&head); err != nil {
			t.Fatal(err)
		}
		switch head.Kind {
		case "ConfigMap":
			var cm struct{ Data map[string]string }
			if err := node.Decode(&cm); err != nil {
				t.Fatal(err)
			}
			cfg = cm.Data
		case "Deployment":
			if err := node.Decode(&dep); err != nil {
				t.Fatal(err)
			}
		}
	}
	port := func(env string) int {
		_, p, err := net.SplitHostPort(cfg[env])
		n, _ := strconv.Atoi(p)
		if err != nil || n == 0 {
			t.Fatalf("ConfigMap %s = %q, want host:port", env, cfg[env])
		}
		return n
	}
	grpcPort, metricsPort := port("IDEM_LISTEN"), port("IDEM_METRICS_LISTEN")

	grpcAddr, _ := startIdemd(t)
	conn, err := grpc.NewClient("passthrough:///"+grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)

	spec := dep.Spec.Template.Spec
	if len(spec.Containers) == 0 {
		t.Fatal("rendered base has no Deployment with containers")
	}
	c := spec.Containers[0]
	named := map[string]int{}
	for _, p := range c.Ports {
		named[p.Name] = p.ContainerPort
	}
	for name, p := range map[string]*probeSpec{"startupProbe": c.StartupProbe, "readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe} {
		switch {
		case p == nil:
			t.Errorf("container %s has no %s", c.Name, name)
		case p.GRPC != nil:
			if p.GRPC.Port != grpcPort {
				t.Errorf("%s asks gRPC health on port %d; idemd listens on %d (IDEM_LISTEN)", name, p.GRPC.Port, grpcPort)
			}
			svc := ""
			if p.GRPC.Service != nil {
				svc = *p.GRPC.Service
			}
			resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
			if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("%s asks health of service %q; a serving idemd answers %v, %v", name, svc, resp.GetStatus(), err)
			}
		case p.HTTPGet != nil:
			n, ok := p.HTTPGet.Port.(int)
			if s, isName := p.HTTPGet.Port.(string); isName {
				n, ok = named[s]
			}
			if !ok || n != metricsPort || p.HTTPGet.Path != "/metrics" {
				t.Errorf("%s gets %v%s; idemd serves /metrics on port %d (IDEM_METRICS_LISTEN)", name, p.HTTPGet.Port, p.HTTPGet.Path, metricsPort)
			}
		default:
			t.Errorf("%s is neither a gRPC nor an HTTP probe", name)
		}
	}

	shutdown, err := time.ParseDuration(cfg["IDEM_SHUTDOWN_TIMEOUT"])
	if err != nil {
		t.Fatalf("ConfigMap IDEM_SHUTDOWN_TIMEOUT = %q: %v", cfg["IDEM_SHUTDOWN_TIMEOUT"], err)
	}
	if d := cfg["IDEM_SHUTDOWN_DELAY"]; d != "" {
		delay, err := time.ParseDuration(d)
		if err != nil {
			t.Fatalf("ConfigMap IDEM_SHUTDOWN_DELAY = %q: %v", d, err)
		}
		shutdown += delay
	}
	grace := 30 * time.Second // Kubernetes' default
	if spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	}
	// idemd may take a second past the timeout to close the store.
	if grace < shutdown+5*time.Second {
		t.Errorf("terminationGracePeriodSeconds %v leaves too little after IDEM_SHUTDOWN_DELAY + IDEM_SHUTDOWN_TIMEOUT %v: SIGKILL would cut the drain or the store's close", grace, shutdown)
	}
}
