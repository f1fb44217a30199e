package cockroach

import (
	"testing"

	"github.com/idemhq/idem/storage/storagetest"
)

func TestConformancePostgres(t *testing.T) {
	storagetest.RunConformanceTests(t, pgHarness)
}

// TestConformancePostgresIsolation runs the suite again with every
// transaction at a stricter isolation level: the statements must be right at
// any level, with conflicts surfacing as serialization failures to retry
// instead of as stale snapshots.
func TestConformancePostgresIsolation(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: READ COMMITTED is covered by TestConformancePostgres")
	}
	for _, level := range []string{"repeatable read", "serializable"} {
		t.Run(level, func(t *testing.T) {
			storagetest.RunConformanceTests(t, harness{base: func(t testing.TB) string {
				return withParams(t, postgresURL(t), "default_transaction_isolation", level)
			}})
		})
	}
}

func BenchmarkStorePostgres(b *testing.B) {
	storagetest.RunBenchmarks(b, pgHarness)
}
