package redis

import (
	"context"
	"errors"
	"testing"

	"github.com/idemhq/idem/storage"
)

// TestWaitFailureFailsOnlyWrites: a Lookup coalesced into the pipeline of
// another caller's Reserve shares its WAIT; when too few replicas answer,
// the Reserve fails with ErrUnavailable and the Lookup keeps its answer.
func TestWaitFailureFailsOnlyWrites(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	// This Redis has no replicas, so WAIT 1 always comes back short.
	s := openTest(ctx, t, "wait_replicas=1&wait_timeout=20ms")
	w := s.reserveCall(reserveParams("a"))
	w.write = true
	r := s.recordCall(lookupScript, testID("x"))
	for i, err := range s.runCalls(ctx, []*call{w, r}) {
		if err != nil {
			t.Fatalf("runCalls()[%d] error = %v, want the calls' own answers", i, err)
		}
	}
	if !errors.Is(w.err, storage.ErrUnavailable) {
		t.Errorf("Reserve under an unsatisfied WAIT error = %v, want ErrUnavailable", w.err)
	}
	if r.err != nil {
		t.Fatalf("Lookup sharing the pipeline error = %v, want its own answer", r.err)
	}
	if _, err := recordOrErr(testID("x"), 0, r.res); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Lookup sharing the pipeline = %v, want ErrNotFound", err)
	}
}
