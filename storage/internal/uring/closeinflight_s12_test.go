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
)

// TestCloseWithSyncsInFlight closes the ring while syncs run: every sync
// returns, and one that Close cut short fails rather than succeeds.
func TestCloseWithSyncsInFlight(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "wal"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for range 20 {
		r := mustNew(t)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 2 * defaultEntries {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if err := r.Fsync(f.Fd(), true); err != nil && !errors.Is(err, ErrClosed) {
					t.Errorf("Fsync racing Close error = %v, want nil or ErrClosed", err)
				}
			}()
		}
		close(start)
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
	}
}

// TestCloseFailsWaiterWithErrClosed: a sync the kernel took but has not
// answered when the ring closes fails with ErrClosed, as Close promises,
// so a caller can tell it from the kernel's own answer.
func TestCloseFailsWaiterWithErrClosed(t *testing.T) {
	r := mustNew(t)
	f, err := os.Create(filepath.Join(t.TempDir(), "wal"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	real := enter
	t.Cleanup(func() { enter = real })
	// The kernel "takes" the entry but never answers, as a slow disk would.
	enter = func(int) (uintptr, syscall.Errno) { return 1, 0 }
	done := make(chan error, 1)
	go func() { done <- r.Fsync(f.Fd(), true) }()
	for deadline := time.Now().Add(10 * time.Second); ; {
		r.mu.Lock()
		n := len(r.waiters)
		r.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sync never waited in the ring")
		}
		time.Sleep(time.Millisecond)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Errorf("Fsync cut short by Close error = %v, want ErrClosed", err)
	}
}
