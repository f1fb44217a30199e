package storagetest

import "testing"

// runAll is being written; see the package documentation for the rules it checks.
func runAll(t *testing.T, h Harness) {
	t.Fatal("storagetest: suite not written yet")
}
