package cockroach

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a test leaves goroutines behind: the sweeper,
// the pool's health checks and the test proxies must all stop on Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
