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
	proc *proc // nil when none runs
}

// proc is one run of the subprocess; err is cmd.Wait's error, set before
// done is closed.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start starts idemd and waits until its health service reports SERVING.
func (d *Idemd) Start(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.proc != nil {
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
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	d.proc = p
	if err := waitServing(ctx, d.Addr, p.done); err != nil {
		_ = cmd.Process.Kill()
		<-p.done
		d.proc = nil
		return fmt.Errorf("idem: idemd did not become ready: %v; its log ends:\n%s", err, d.logTail())
	}
	return nil
}

func (d *Idemd) logTail() []byte {
	tail, _ := os.ReadFile(d.Log)
	if len(tail) > 2000 {
		tail = tail[len(tail)-2000:]
	}
	return tail
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
	if d.proc == nil {
		return 0
	}
	return d.proc.cmd.Process.Pid
}

// Kill sends SIGKILL and waits for the process to exit: no shutdown and no
// flush of idemd's own buffers. Data written to the kernel but not yet
// fsync'd survives it, so a kill tests a process crash, not a power cut.
// An error says the process had already exited on its own: a crash of
// idemd's own making, which must not pass for a kill the test chose.
func (d *Idemd) Kill() error { return d.stop(syscall.SIGKILL, 0) }

// Stop sends SIGTERM and waits up to timeout for a clean exit (status 0).
// An error says idemd had exited on its own before, exited with another
// status, or had to be killed.
func (d *Idemd) Stop(timeout time.Duration) error { return d.stop(syscall.SIGTERM, timeout) }

func (d *Idemd) stop(sig syscall.Signal, timeout time.Duration) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.proc
	if p == nil {
		return nil
	}
	d.proc = nil
	select {
	case <-p.done:
		return fmt.Errorf("idem: idemd exited on its own (%v) before it was sent %v; its log ends:\n%s", p.err, sig, d.logTail())
	default:
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	if timeout == 0 {
		<-p.done
		// A process that died on its own just before the signal exits
		// with its own status, not by the signal.
		if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != sig {
			return fmt.Errorf("idem: idemd exited with %v, not by %v; its log ends:\n%s", p.err, sig, d.logTail())
		}
		return nil
	}
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("idem: idemd exited with %v after %v, want status 0; its log ends:\n%s", p.err, sig, d.logTail())
		}
		return nil
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("idem: idemd did not exit within %v of %v and was killed", timeout, sig)
	}
}

// Exited is closed when the current subprocess exits (nil when none runs).
func (d *Idemd) Exited() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.proc == nil {
		return nil
	}
	return d.proc.done
}
