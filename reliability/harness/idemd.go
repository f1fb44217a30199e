package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// BuildIdemd builds the commands pkgs (paths relative to the module root,
// such as "./cmd/idemd") into dir in one go build and returns the binaries'
// paths in the same order.
func BuildIdemd(ctx context.Context, dir string, pkgs ...string) ([]string, error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-o", dir + string(filepath.Separator)}, pkgs...)...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("idem: building %v: %v\n%s", pkgs, err, out)
	}
	bins := make([]string, len(pkgs))
	for i, p := range pkgs {
		bins[i] = filepath.Join(dir, filepath.Base(p))
	}
	return bins, nil
}

func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("idem: go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("idem: not inside the idem module")
	}
	return filepath.Dir(gomod), nil
}

// FreeAddr returns a loopback address nobody listens on right now.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Idemd is an idemd subprocess that can be killed and restarted on the same
// address and store.
type Idemd struct {
	Bin   string
	Addr  string
	Store string
	Args  []string // extra flags
	Log   string   // file the subprocess's stderr is appended to

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts idemd and waits until its health service reports SERVING.
func (d *Idemd) Start(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd != nil {
		return errors.New("idem: idemd already running")
	}
	logf, err := os.OpenFile(d.Log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	args := append([]string{"--listen", d.Addr, "--store", d.Store, "--log-level", "warn", "--health-interval", "200ms"}, d.Args...)
	cmd := exec.Command(d.Bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("idem: starting idemd: %v", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	d.cmd, d.done = cmd, done
	if err := waitServing(ctx, d.Addr, done); err != nil {
		_ = cmd.Process.Kill()
		<-done
		d.cmd = nil
		tail, _ := os.ReadFile(d.Log)
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		return fmt.Errorf("idem: idemd did not become ready: %v; its log ends:\n%s", err, tail)
	}
	return nil
}

func waitServing(ctx context.Context, addr string, exited <-chan struct{}) error {
	conn, err := Dial(addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		resp, err := hc.Check(cctx, &healthpb.HealthCheckRequest{})
		ccancel()
		if err == nil && resp.Status == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		select {
		case <-exited:
			return errors.New("idemd exited")
		case <-ctx.Done():
			return fmt.Errorf("%v (last health check: %v)", ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// PID is the running subprocess's process id, or 0.
func (d *Idemd) PID() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// Kill sends SIGKILL and waits for the process to exit: no shutdown, no
// flush, what a power cut or the OOM killer does.
func (d *Idemd) Kill() error { return d.stop(syscall.SIGKILL, 0) }

// Stop sends SIGTERM and waits up to timeout for a graceful exit, then kills.
func (d *Idemd) Stop(timeout time.Duration) error { return d.stop(syscall.SIGTERM, timeout) }

func (d *Idemd) stop(sig syscall.Signal, timeout time.Duration) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return nil
	}
	if err := d.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	if timeout > 0 {
		select {
		case <-d.done:
		case <-time.After(timeout):
			_ = d.cmd.Process.Kill()
			<-d.done
		}
	} else {
		<-d.done
	}
	d.cmd = nil
	return nil
}

// Exited is closed when the current subprocess exits (nil when none runs).
func (d *Idemd) Exited() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.done
}
