package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

const defaultTestTimeout = 60 * time.Second

var idemdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "idemd-test")
	if err != nil {
		panic(err)
	}
	idemdBin = filepath.Join(dir, "idemd")
	out, err := exec.Command("go", "build", "-o", idemdBin, ".").CombinedOutput()
	if err != nil {
		os.Stderr.Write(out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// runIdemd runs idemd to completion and returns its exit code and stderr.
func runIdemd(ctx context.Context, t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, idemdBin, args...)
	cmd.Env = append(cleanEnv(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stderr.String()
	}
	t.Fatalf("running idemd: %v", err)
	return 0, ""
}

// cleanEnv is the environment without IDEM_ settings that would change the flags.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "IDEM_") {
			env = append(env, kv)
		}
	}
	return env
}

func TestStartErrorsExitTwoWithOneLine(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"unknown flag", nil, []string{"--bogus"}, "idemd: flag provided but not defined: -bogus"},
		{"bad duration flag", nil, []string{"--max-lease", "forever"}, `idemd: invalid value "forever" for flag -max-lease`},
		{"bad env value", []string{"IDEM_DEFAULT_LEASE=soon"}, nil, `idemd: invalid value "soon" for IDEM_DEFAULT_LEASE`},
		{"inconsistent limits", nil, []string{"--store", "memory://", "--default-lease", "2h"}, "idemd: lease limits"},
		{"bad log level", nil, []string{"--log-level", "loud"}, `idemd: invalid value "loud" for flag -log-level`},
		{"bad namespace policy", nil, []string{"--namespace-policy", "ns=max-lease=-1s"}, "idemd: invalid value"},
		{"negative store timeout", nil, []string{"--store", "memory://", "--store-timeout", "-1s"}, "idemd: --store-timeout is negative"},
		{"negative store timeout from env", []string{"IDEM_STORE_TIMEOUT=-5s"}, []string{"--store", "memory://"}, "idemd: --store-timeout is negative"},
		{"store timeout typo", nil, []string{"--store", "memory://", "--store-timeout", "1ns"}, "idemd: --store-timeout 1ns is below 1ms (0: no bound)"},
		{"health interval typo", nil, []string{"--store", "memory://", "--health-interval", "1ns"}, "idemd: --health-interval 1ns is below 100ms"},
		{"tenant from CN without client CA", nil, []string{"--listen", "127.0.0.1:0", "--store", "memory://", "--tenant-from-cn"}, "idemd: --tenant-from-cn maps client certificates: it needs --tls-client-ca"},
		{"unknown store scheme", nil, []string{"--store", "bogus://x"}, `idemd: cannot open store bogus://x: store URL scheme "bogus" is not supported`},
		{"stray argument", nil, []string{"serve", "extra"}, `idemd: unexpected argument "extra"`},
		{"unknown command", nil, []string{"frobnicate"}, `idemd: unknown command "frobnicate"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			code, stderr := runIdemd(ctx, t, tt.env, tt.args...)
			if code != 2 {
				t.Errorf("exit code = %d, want 2 (stderr %q)", code, stderr)
			}
			if lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n"); len(lines) != 1 {
				t.Errorf("stderr has %d lines, want 1: %q", len(lines), stderr)
			}
			if !strings.HasPrefix(stderr, tt.want) {
				t.Errorf("stderr = %q, want prefix %q", stderr, tt.want)
			}
		})
	}
}

func TestFlagsWinOverEnv(t *testing.T) {
	ctx := testContext(t)
	// The env's store is bad; the flag's is good, so idemd gets past opening it
	// and then fails on the env's lease limit, which no flag overrides.
	code, stderr := runIdemd(ctx, t, []string{"IDEM_STORE=bogus://x", "IDEM_MAX_LEASE=1s"}, "--store", "memory://")
	if code != 2 || !strings.Contains(stderr, "lease limits") {
		t.Errorf("idemd = %d, %q; want exit 2 about lease limits (flag --store over IDEM_STORE, IDEM_MAX_LEASE applied)", code, stderr)
	}
}

// daemon is an idemd running in the background.
type daemon struct {
	cmd    *exec.Cmd
	addr   string
	done   chan struct{} // closed once idemd exited and its stderr is read
	stderr *lockedBuffer
	err    error
}

// lockedBuffer is idemd's stderr, read by the test while idemd writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) WriteString(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.WriteString(s)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startIdemd starts idemd and waits until it logs that it serves.
func startIdemd(ctx context.Context, t *testing.T, args ...string) *daemon {
	t.Helper()
	cmd := exec.Command(idemdBin, append([]string{"--listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = cleanEnv()
	pr, pw := io.Pipe()
	d := &daemon{cmd: cmd, done: make(chan struct{}), stderr: &lockedBuffer{}}
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	scanned := make(chan struct{})
	go func() {
		d.err = cmd.Wait()
		pw.Close()
		<-scanned
		close(d.done)
	}()
	addrc := make(chan string, 1)
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			d.stderr.WriteString(line + "\n")
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "idemd serving" {
				addrc <- rec.Addr
			}
		}
		io.Copy(io.Discard, pr)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-d.done
	})
	select {
	case d.addr = <-addrc:
		return d
	case <-d.done:
		t.Fatalf("idemd exited before serving: %v", d.err)
	case <-ctx.Done():
		t.Fatal("idemd did not start in time")
	}
	return nil
}

// stop sends SIGTERM and returns the exit code.
func (d *daemon) stop(ctx context.Context, t *testing.T) int {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.done:
	case <-ctx.Done():
		t.Fatal("idemd did not stop after SIGTERM")
	}
	var ee *exec.ExitError
	if errors.As(d.err, &ee) {
		return ee.ExitCode()
	}
	return 0
}

func client(t *testing.T, addr string) idemv1.IdempotencyServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return idemv1.NewIdempotencyServiceClient(conn)
}

func TestPebbleDirLockedByAnotherIdemd(t *testing.T) {
	ctx := testContext(t)
	store := "pebble://" + filepath.Join(t.TempDir(), "data")
	first := startIdemd(ctx, t, "--store", store)
	code, stderr := runIdemd(ctx, t, nil, "--listen", "127.0.0.1:0", "--store", store)
	if code != 2 {
		t.Errorf("second idemd exit code = %d, want 2", code)
	}
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "idemd: cannot open store "+store) || !strings.Contains(last, "in use") {
		t.Errorf("second idemd's error = %q, want one line saying the store is in use", last)
	}
	for _, l := range lines[:len(lines)-1] {
		if strings.HasPrefix(l, "idemd:") {
			t.Errorf("more than one error line: %q", stderr)
		}
	}
	if code := first.stop(ctx, t); code != 0 {
		t.Errorf("first idemd exit code after SIGTERM = %d, want 0; stderr:\n%s", code, first.stderr)
	}
}

func TestDataSurvivesRestart(t *testing.T) {
	ctx := testContext(t)
	store := "pebble://" + filepath.Join(t.TempDir(), "data")
	d := startIdemd(ctx, t, "--store", store)
	c := client(t, d.addr)
	req := &idemv1.ReserveRequest{Namespace: "ns", Key: "order-1", Fingerprint: []byte("fp")}
	r, err := c.Reserve(ctx, req)
	if err != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
		t.Fatalf("Reserve() = %v, %v, want RESERVED", r, err)
	}
	if _, err := c.Complete(ctx, &idemv1.CompleteRequest{Namespace: "ns", Key: "order-1", Token: 1, Result: &idemv1.Result{Body: []byte("charged")}}); err != nil {
		t.Fatalf("Complete() error = %v", err)
	}
	if code := d.stop(ctx, t); code != 0 {
		t.Fatalf("idemd exit code after SIGTERM = %d, want 0; stderr:\n%s", code, d.stderr)
	}
	if !strings.Contains(d.stderr.String(), `"msg":"idemd stopped"`) {
		t.Errorf("idemd did not log a clean stop:\n%s", d.stderr)
	}

	d2 := startIdemd(ctx, t, "--store", store)
	r, err = client(t, d2.addr).Reserve(ctx, req)
	if err != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED || string(r.GetRecord().GetResult().GetBody()) != "charged" {
		t.Errorf("Reserve() after restart = %v, %v, want COMPLETED with body %q", r, err, "charged")
	}
	d2.stop(ctx, t)
}

func TestMetricsEndpoint(t *testing.T) {
	ctx := testContext(t)
	d := startIdemd(ctx, t, "--store", "memory://", "--metrics-listen", "127.0.0.1:0")
	var addr string
	for _, line := range strings.Split(d.stderr.String(), "\n") {
		var rec struct {
			Msg  string `json:"msg"`
			Addr string `json:"metrics_addr"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "idemd serving" {
			addr = rec.Addr
		}
	}
	if addr == "" {
		t.Fatalf("no metrics_addr logged:\n%s", d.stderr)
	}
	if _, err := client(t, d.addr).Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k"}); err != nil {
		t.Fatal(err)
	}
	body := httpGet(ctx, t, "http://"+addr+"/metrics")
	for _, want := range []string{`grpc_server_handled_total{grpc_code="OK",grpc_method="Reserve",grpc_service="idem.v1.IdempotencyService",grpc_type="unary"} 1`, "process_cpu_seconds_total"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	d.stop(ctx, t)
}

func TestCorruptPebbleDirRefusesToStart(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "CURRENT"), []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stderr := runIdemd(ctx, t, nil, "--listen", "127.0.0.1:0", "--store", "pebble://"+dir)
	if code != 2 {
		t.Errorf("exit code = %d, want 2", code)
	}
	if want := "idemd: cannot open store pebble://" + dir; !strings.HasPrefix(stderr, want) || strings.Count(stderr, "\n") != 1 {
		t.Errorf("stderr = %q, want one line starting %q", stderr, want)
	}
	// Never silently empty: no fresh store was created over the old one.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "MANIFEST") || strings.HasSuffix(e.Name(), ".log") {
			t.Errorf("idemd created %s in the corrupt directory", e.Name())
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "CURRENT")); string(b) != "garbage\n" {
		t.Errorf("CURRENT = %q, want it untouched", b)
	}
}
