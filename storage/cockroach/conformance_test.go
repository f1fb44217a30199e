package cockroach

import (
	"testing"

	"github.com/idemhq/idem/storage/storagetest"
)

func TestConformancePostgres(t *testing.T) {
	storagetest.RunConformanceTests(t, pgHarness)
}

func BenchmarkStorePostgres(b *testing.B) {
	storagetest.RunBenchmarks(b, pgHarness)
}
