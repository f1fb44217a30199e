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
	for len(entries) > 0 {
		chunk := entries[:min(sweepChunk, len(entries))]
		entries = entries[len(chunk):]
		n, err := s.sweepChunk(chunk, now)
		deleted += n
		s.swept.Add(uint64(n))
		if err != nil {
			return deleted, false, err
		}
		if err := ctx.Err(); err != nil {
			return deleted, false, err
		}
	}
	return deleted, full, nil
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
// holding their stripes for one unsynced commit.
func (s *Store) sweepChunk(entries [][]byte, now time.Time) (int, error) {
	keys := make([][]byte, len(entries))
	for i, e := range entries {
		keys[i] = e[9:]
	}
	unlock := s.lockAll(keys)
	defer unlock()
	b := s.db.NewBatch()
	defer b.Close()
	gone := map[string]bool{}
	deleted := 0
	for i, entry := range entries {
		key := keys[i]
		if gone[string(key)] {
			_ = b.Delete(entry, nil)
			continue
		}
		rec, err := s.get(key)
		if err != nil {
			return 0, err
		}
		switch {
		case rec == nil:
		case !rec.Live(now):
			if err := del(b, key, rec); err != nil {
				return 0, s.writeErr(err)
			}
			gone[string(key)] = true
			deleted++
		}
		if rec == nil || !bytes.Equal(expiryKey(rec.ExpiresAt, key), entry) {
			// An entry left behind by an earlier expiry of the record.
			if err := b.Delete(entry, nil); err != nil {
				return 0, s.writeErr(err)
			}
		}
	}
	if b.Empty() {
		return 0, nil
	}
	// Unsynced: a delete lost in a crash leaves an expired record, which
	// reads as absent and the next sweep removes. A later synced commit
	// makes it durable anyway, since the WAL is written in order.
	if err := b.Commit(pebbledb.NoSync); err != nil {
		return 0, s.writeErr(err)
	}
	return deleted, nil
}
