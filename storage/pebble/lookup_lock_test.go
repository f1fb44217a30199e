package pebble

import (
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/idemhq/idem/storage"
)

// TestLookupWaitsForBusyStripe: Pebble makes a batch readable before its
// sync ends, and a writer holds its record's stripe until the sync is done.
// Lookup must take the stripe as well, or it could answer with a write that
// a crash then loses. The test holds the stripe as an in-flight writer would
// and wants Lookup to wait for it.
func TestLookupWaitsForBusyStripe(t *testing.T) {
	ctx := testCtx(t)
	s := openTest(t, t.TempDir(), clockwork.NewFakeClockAt(epoch))
	defer s.Close()
	p := storage.ReserveParams{ID: storage.ID{Tenant: "t", Namespace: "ns", Key: "k"}, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour}
	if _, _, err := s.Reserve(ctx, p); err != nil {
		t.Fatal(err)
	}
	busy := s.lockFor(recordKey(p.ID))
	busy.Lock()
	done := make(chan error, 1)
	go func() {
		_, err := s.Lookup(ctx, p.ID)
		done <- err
	}()
	select {
	case err := <-done:
		busy.Unlock()
		t.Fatalf("Lookup() returned (error = %v) while a writer held the record's stripe; want it to wait", err)
	case <-time.After(200 * time.Millisecond):
	}
	busy.Unlock()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Lookup() after the stripe was freed error = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Lookup() still waiting after the stripe was freed")
	}
}
