package memory

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

// TestBatchCompleteRacingCloseAnswersErrClosed: a BatchComplete that
// passed the closed check before Close and reached the shard after it
// answered success with ErrClosed on every item, where BatchReserve (and
// every backend's call after Close) fails as a whole with ErrClosed.
func TestBatchCompleteRacingCloseAnswersErrClosed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := New(WithShards(1), WithSweepInterval(0))
	defer s.Close()
	mustReserve(t, ctx, s, "k", time.Hour, time.Hour)
	sh := &s.shards[0]
	sh.mu.Lock()
	type answer struct {
		res []storage.CompleteResult
		err error
	}
	done := make(chan answer, 1)
	go func() {
		res, err := s.BatchComplete(ctx, []storage.CompleteParams{{ID: id("k"), Token: 1, Result: &storage.Result{}, Retention: time.Hour}})
		done <- answer{res, err}
	}()
	if !blockedIn(ctx, "BatchComplete") {
		sh.mu.Unlock()
		t.Fatal("BatchComplete never waited for the shard lock")
	}
	s.closed.Store(true)
	sh.t.reset()
	sh.mu.Unlock()
	if a := <-done; !errors.Is(a.err, storage.ErrClosed) {
		t.Errorf("BatchComplete() racing Close = %d results, error %v; want ErrClosed", len(a.res), a.err)
	}
}
