package idemd

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// A connection that opens HTTP/2 and then sends nothing (no credentials
// are ever asked for without a call) must not hold a file descriptor and
// goroutines for ever: gRPC-go's default MaxConnectionIdle is infinity.
func TestIdleGRPCConnectionsAreClosed(t *testing.T) {
	old := grpcMaxConnectionIdle
	grpcMaxConnectionIdle = 200 * time.Millisecond
	defer func() { grpcMaxConnectionIdle = old }()
	addr, stop, done := serveInBackground(t, memoryConfig(), newGate())
	defer func() { stop(); <-done }()

	c, err := net.DialTimeout("tcp", addr, defaultTestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := fr.ReadFrame()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("idle connection still open after 5s: no GOAWAY, no close")
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return
			}
			t.Fatalf("reading frames: %v", err)
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			return
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				fr.WritePing(true, f.Data)
			}
		}
	}
}
