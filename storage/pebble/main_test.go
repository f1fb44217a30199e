package pebble

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a closed store leaves goroutines behind
// (the sweep, Pebble's background work).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
