package faultproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo serves lines back until the test ends.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

func newProxy(t *testing.T) *Proxy {
	t.Helper()
	p, err := New(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends a line and reads it back within wait.
func roundTrip(c net.Conn, wait time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

func TestPassThrough(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p.Addr())
	got, err := roundTrip(c, 5*time.Second)
	if err != nil || got != "ping\n" {
		t.Fatalf("roundTrip() = %q, %v, want %q, nil", got, err, "ping\n")
	}
}

func TestLatency(t *testing.T) {
	p := newProxy(t)
	p.SetLatency(50 * time.Millisecond)
	c := dial(t, p.Addr())
	start := time.Now()
	if _, err := roundTrip(c, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// Two chunks, each held at least the latency: a lower bound, not a timing.
	if got := time.Since(start); got < 100*time.Millisecond {
		t.Errorf("round trip took %v, want at least 100ms", got)
	}
}

func TestBlackholeHoldsDataUntilItEnds(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p.Addr())
	p.Blackhole(true)
	_ = c.SetDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read during blackhole error = %v, want a timeout", err)
	}
	p.Blackhole(false)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	got, err := r.ReadString('\n')
	if err != nil || got != "ping\n" {
		t.Fatalf("read after blackhole = %q, %v, want %q, nil", got, err, "ping\n")
	}
}

func TestResetAbortsOpenConnections(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p.Addr())
	if _, err := roundTrip(c, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Reset()
	if _, err := roundTrip(c, 5*time.Second); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("roundTrip() after Reset error = %v, want a connection error", err)
	}
	// New connections still work.
	if _, err := roundTrip(dial(t, p.Addr()), 5*time.Second); err != nil {
		t.Fatalf("roundTrip() on a new connection error = %v, want nil", err)
	}
}

func TestRefuse(t *testing.T) {
	p := newProxy(t)
	p.Refuse(true)
	// The reset may reach the dialer before or after connect returns.
	c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if err == nil {
		defer c.Close()
		_, err = roundTrip(c, 5*time.Second)
	}
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("dial and roundTrip() while refusing error = %v, want a connection error", err)
	}
	p.Refuse(false)
	if _, err := roundTrip(dial(t, p.Addr()), 5*time.Second); err != nil {
		t.Fatalf("roundTrip() after refusing error = %v, want nil", err)
	}
}

// TestFaultedCountsTouchedTraffic: a fault on a proxy nobody uses counts
// nothing, so a test can tell its fault was in the path.
func TestFaultedCountsTouchedTraffic(t *testing.T) {
	p := newProxy(t)
	p.SetLatency(time.Millisecond)
	p.Reset()
	if got := p.Faulted(); got != 0 {
		t.Fatalf("Faulted() with no traffic = %d, want 0", got)
	}
	c := dial(t, p.Addr())
	if _, err := roundTrip(c, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	delayed := p.Faulted()
	if delayed < 2 {
		t.Fatalf("Faulted() after a delayed round trip = %d, want at least 2 (one chunk each way)", delayed)
	}
	p.Reset()
	if got := p.Faulted(); got <= delayed {
		t.Errorf("Faulted() after resetting an open connection = %d, want more than %d", got, delayed)
	}
}
