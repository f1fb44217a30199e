package cockroach

import (
	"context"
	"errors"
	"time"

	"github.com/idemhq/idem/storage"
)

// sweepLoop deletes expired rows on PostgreSQL, which has no row-level TTL.
// Reads already treat expired rows as absent, so sweeping only reclaims
// space and may lag. Every replica may run it: SKIP LOCKED keeps them from
// waiting on each other and a row is deleted only while it is expired.
func (s *Store) sweepLoop(ctx context.Context) {
	defer s.sweepWG.Done()
	t := time.NewTicker(s.cfg.sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Keep going while batches come back full, so a backlog drains
		// in one tick without holding locks for long.
		for ctx.Err() == nil {
			n, err := s.sweepOnce(ctx)
			if err != nil {
				if ctx.Err() == nil && !errors.Is(err, storage.ErrClosed) {
					s.log.Warn("idem: sweeping expired records failed", "store", s.cfg.where, "err", err)
				}
				break
			}
			if n < int64(s.cfg.sweepBatch) {
				break
			}
		}
	}
}

// sweepOnce deletes up to one batch of expired rows. At REPEATABLE READ or
// SERIALIZABLE the DELETE can lose a conflict with a live writer; it goes
// through the retry loop like every other statement, since deleting rows
// that are still expired again is harmless.
func (s *Store) sweepOnce(ctx context.Context) (int64, error) {
	var n int64
	err := s.retry(ctx, func() error {
		tag, err := s.pool.Exec(ctx, sqlSweep, s.offset.Load(), s.cfg.sweepBatch)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, err
	}
	s.swept.Add(uint64(n))
	return n, nil
}
