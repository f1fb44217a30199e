package pebble

import (
	"bytes"
	"context"
	"hash/maphash"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
)

func newSeed() maphash.Seed { return maphash.MakeSeed() }

// sweepChunk bounds how many stripes one sweep commit holds at once, so a
// writer waits at most for one small unsynced commit.
const sweepChunk = 128

func (s *Store) sweepLoop(every time.Duration) {
	t := s.clock.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stopCtx.Done():
			return
		case <-t.Chan():
			if _, err := s.Sweep(s.stopCtx); err != nil && s.stopCtx.Err() == nil {
				s.log.Error("idem: pebble expiry sweep failed", "dir", s.dir, "err", err)
			}
		}
	}
}

// Swept is the number of expired records the sweep has deleted since Open.
func (s *Store) Swept() uint64 { return s.swept.Load() }

// Sweep deletes the records expired at the store clock's now, in steps of
// the sweep batch size, and returns how many it deleted. The background
// sweep calls it; tests call it to run one sweep synchronously.
func (s *Store) Sweep(ctx context.Context) (int, error) {
	s.sweepM.Lock()
	defer s.sweepM.Unlock()
	total := 0
	for {
		n, more, err := s.sweepStep(ctx)
		total += n
		if err != nil || !more {
			return total, err
		}
	}
}

// sweepStep finds up to one batch of expiry entries due at now and deletes
// their records, each re-checked under its stripe lock: a takeover or an
// ExtendLease may have pushed the record's expiry out since the entry was
// read, and then only the stale entry goes.
func (s *Store) sweepStep(ctx context.Context) (deleted int, more bool, err error) {
	if err := s.enter(ctx); err != nil {
		return 0, false, err
	}
	defer s.mu.RUnlock()
	now := s.now()
	entries, err := s.dueEntries(ctx, now, s.opts.sweepBatch)
	if err != nil {
		return 0, false, err
	}
	full := len(entries) == s.opts.sweepBatch
	busy := 0
	for len(entries) > 0 {
		chunk := entries[:min(sweepChunk, len(entries))]
		entries = entries[len(chunk):]
		n, skipped, err := s.sweepChunk(chunk, now)
		deleted += n
		busy += skipped
		s.swept.Add(uint64(n))
		if err != nil {
			return deleted, false, err
		}
		if err := ctx.Err(); err != nil {
			return deleted, false, err
		}
	}
	// Entries skipped for a busy stripe come first again in the next
	// step; a step that skipped all it found ends the sweep, which the
	// next tick resumes.
	return deleted, full && busy < s.opts.sweepBatch, nil
}

// dueEntries returns up to limit expiry entries due at now, oldest first.
func (s *Store) dueEntries(ctx context.Context, now time.Time, limit int) ([][]byte, error) {
	it, err := s.db.NewIterWithContext(ctx, &pebbledb.IterOptions{
		LowerBound: []byte{prefixExpiry},
		UpperBound: expiryBound(now),
	})
	if err != nil {
		return nil, s.readErr(err)
	}
	var entries [][]byte
	for ok := it.First(); ok && len(entries) < limit; ok = it.Next() {
		entries = append(entries, bytes.Clone(it.Key()))
	}
	if err := it.Close(); err != nil {
		return nil, s.readErr(err)
	}
	return entries, nil
}

// sweepChunk deletes the records of entries that are still expired at now,
// holding their stripes for one unsynced commit, and returns how many it
// deleted and how many entries it skipped. It never waits for a stripe: a
// writer holds its stripe until its batch is synced, and a sweep waiting
// for it while holding the stripes it already had would stall every
// writer behind those. An entry whose stripe is busy is left for a later
// sweep (an expired record reads as absent until then).
func (s *Store) sweepChunk(entries [][]byte, now time.Time) (deleted, skipped int, err error) {
	held := make(map[int]bool, len(entries))
	defer func() {
		for i := range held {
			s.locks[i].Unlock()
		}
	}()
	kept := make([][]byte, 0, len(entries))
	for _, e := range entries {
		key := e[9:]
		i := s.stripeOf(key)
		if !held[i] {
			if !s.locks[i].TryLock() {
				skipped++
				continue
			}
			held[i] = true
		}
		kept = append(kept, e)
	}
	entries = kept
	// get reads the presence filter, which a rebuild frees once it holds
	// pres.mu alone.
	s.pres.mu.RLock()
	defer s.pres.mu.RUnlock()
	b := s.db.NewBatch()
	defer b.Close()
	gone := map[string]bool{}
	for _, entry := range entries {
		key := entry[9:]
		if gone[string(key)] {
			_ = b.Delete(entry, nil)
			continue
		}
		rec, err := s.get(key)
		if err != nil {
			return 0, skipped, err
		}
		switch {
		case rec == nil:
		case !rec.Live(now):
			if err := del(b, key, rec); err != nil {
				return 0, skipped, s.writeErr(err)
			}
			gone[string(key)] = true
			deleted++
		}
		if rec == nil || !bytes.Equal(expiryKey(rec.ExpiresAt, key), entry) {
			// An entry left behind by an earlier expiry of the record.
			if err := b.Delete(entry, nil); err != nil {
				return 0, skipped, s.writeErr(err)
			}
		}
	}
	if b.Empty() {
		return 0, skipped, nil
	}
	// Unsynced: a delete lost in a crash leaves an expired record, which
	// reads as absent and the next sweep removes. A later synced commit
	// makes it durable anyway, since the WAL is written in order.
	if err := b.Commit(pebbledb.NoSync); err != nil {
		return 0, skipped, s.writeErr(err)
	}
	return deleted, skipped, nil
}
