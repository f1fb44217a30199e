//go:build linux

package uring

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/idemhq/idem/internal/testenv"
)

func newRing(t *testing.T) *Ring {
	t.Helper()
	r := mustNew(t)
	t.Cleanup(func() { r.Close() })
	return r
}

// mustNew sets up a ring, or skips where io_uring is switched off
// (kernel.io_uring_disabled, seccomp; the store then syncs the usual way,
// which its own tests cover). CI's machines have io_uring, so there a
// failing New fails the test instead of hiding behind a skip.
func mustNew(t *testing.T) *Ring {
	t.Helper()
	r, err := New()
	if err != nil {
		if testenv.InCI() {
			t.Fatalf("New() error = %v; CI's machines offer io_uring", err)
		}
		t.Skipf("no io_uring here: %v", err)
	}
	return r
}

func TestFsyncFile(t *testing.T) {
	r := newRing(t)
	f, err := os.Create(filepath.Join(t.TempDir(), "wal"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("record")); err != nil {
		t.Fatal(err)
	}
	for _, datasync := range []bool{true, false} {
		if err := r.Fsync(f.Fd(), datasync); err != nil {
			t.Errorf("Fsync(file, datasync=%v) error = %v", datasync, err)
		}
	}
}

// TestFsyncErrors checks that the kernel's answer for the descriptor comes
// back as the error fsync(2) would give.
func TestFsyncErrors(t *testing.T) {
	r := newRing(t)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	if err := r.Fsync(pw.Fd(), true); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("Fsync(pipe) error = %v, want EINVAL as from fdatasync(2)", err)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "closed"))
	if err != nil {
		t.Fatal(err)
	}
	fd := f.Fd()
	f.Close()
	if err := r.Fsync(fd, true); !errors.Is(err, syscall.EBADF) {
		t.Errorf("Fsync(closed fd) error = %v, want EBADF", err)
	}
}

// TestConcurrentFsyncs runs more syncs at once than the ring has entries,
// so callers queue for slots, and each must get its own answer.
func TestConcurrentFsyncs(t *testing.T) {
	r := newRing(t)
	dir := t.TempDir()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	const n = 3 * defaultEntries
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%3 == 0 { // a third fail, and must not take others' answers
				errs[i] = r.Fsync(pw.Fd(), true)
				return
			}
			f, err := os.Create(filepath.Join(dir, "f"+string(rune('a'+i%26))+string(rune('a'+i/26))))
			if err != nil {
				errs[i] = err
				return
			}
			defer f.Close()
			_, _ = f.Write([]byte{byte(i)})
			errs[i] = r.Fsync(f.Fd(), i%2 == 0)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if i%3 == 0 {
			if !errors.Is(err, syscall.EINVAL) {
				t.Errorf("sync %d (pipe) error = %v, want EINVAL", i, err)
			}
		} else if err != nil {
			t.Errorf("sync %d (file) error = %v", i, err)
		}
	}
}

func TestClose(t *testing.T) {
	r := mustNew(t)
	if err := r.Close(); err != nil {
		t.Fatalf("Close() error = %v", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close() error = %v, want nil", err)
	}
	f, err := os.CreateTemp(t.TempDir(), "f")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := r.Fsync(f.Fd(), true); !errors.Is(err, ErrClosed) {
		t.Errorf("Fsync after Close error = %v, want ErrClosed", err)
	}
}

// TestNotSubmitted has the kernel refuse one entry: that sync must fail
// with ErrNotSubmitted, and the next must be submitted and answered on its
// own, not left in the queue behind the refused one.
func TestNotSubmitted(t *testing.T) {
	r := newRing(t)
	f, err := os.Create(filepath.Join(t.TempDir(), "wal"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	real := enter
	t.Cleanup(func() { enter = real })
	enter = func(int) (uintptr, syscall.Errno) { return 0, syscall.EAGAIN }
	if err := r.Fsync(f.Fd(), true); !errors.Is(err, ErrNotSubmitted) || !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("Fsync with the kernel refusing = %v, want ErrNotSubmitted and EAGAIN", err)
	}
	enter = real
	done := make(chan error, 1)
	go func() { done <- r.Fsync(f.Fd(), true) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Fsync after a refused one = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Fsync after a refused one never returned: the refused entry is still queued ahead of it")
	}
}
