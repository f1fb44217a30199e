package storagetest

import (
	"context"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

// Clock moves a store's clock forward. clockwork's FakeClock satisfies it;
// backends whose clock is the database's add the offset to the server's
// now() instead.
type Clock interface {
	Advance(d time.Duration)
}

// Harness makes fresh stores for the suite.
type Harness interface {
	// MakeStore returns a new, empty store and the clock that drives it.
	// The suite closes the store; the harness cleans up anything else
	// (schemas, directories) with t.Cleanup.
	MakeStore(ctx context.Context, t *testing.T) (storage.Store, Clock)
}

// Damager is a Harness that can damage a stored record behind the store's
// back (bytes no codec version reads), as a disk or an operator's manual
// edit can; the suite then checks that such a record fails only itself.
type Damager interface {
	// Damage makes id's record in st, which the harness made, unreadable;
	// the record may or may not exist before.
	Damage(ctx context.Context, t *testing.T, st storage.Store, id storage.ID)
}

// RunConformanceTests runs every rule of the storage contract against the
// stores the harness makes.
func RunConformanceTests(t *testing.T, h Harness) {
	t.Helper()
	runAll(t, h)
}
