package consumer

import (
	"testing"
	"time"
)

// WithLease(0) is the default lease, not "no lease": with no lease the
// heartbeat was off, and a handler running past the server's default lease
// could be taken over and run twice.
func TestWithLeaseZeroKeepsHeartbeat(t *testing.T) {
	for _, d := range []time.Duration{0, -time.Second} {
		c := New(nil, WithLease(d))
		if c.o.lease != 30*time.Second || c.o.heartbeat != 15*time.Second {
			t.Errorf("New(WithLease(%v)): lease %v, heartbeat %v; want 30s and 15s", d, c.o.lease, c.o.heartbeat)
		}
	}
}
