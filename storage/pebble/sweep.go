package pebble

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/idemhq/idem/internal/keyhash"
	"github.com/idemhq/idem/storage"
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
				s.logSweepErr(err)
			}
		}
	}
}

// logSweepErr reports a failed sweep. A record it cannot read is named as
// the rest of idem's logs name keys, by hash: it is reported every sweep
// until an admin deletes it, and keys often carry customers' data.
func (s *Store) logSweepErr(err error) {
	var d *storage.DamagedError
	if !errors.As(err, &d) {
		s.log.Error("idem: pebble expiry sweep failed", "dir", s.dir, "err", err)
		return
	}
	s.log.Error("idem: pebble expiry sweep skipped a record it cannot read; ListKeys names it and an admin DeleteKey removes it",
		"dir", s.dir, "tenant", d.ID.Tenant, "namespace", d.ID.Namespace, keyhash.Slog(d.ID.Key), "err", d.Err)
}

// Swept is the number of expired records the sweep has deleted since Open.
func (s *Store) Swept() uint64 { return s.swept.Load() }

// Sweep deletes the records expired at the store clock's now, in steps of
// the sweep batch size, and returns how many it deleted. The background
// sweep calls it; tests call it to run one sweep synchronously. Each step
// starts after the entries the step before it read, so entries it had to
// leave (a busy stripe, a record it cannot read) never hold it back; a
// record it cannot read stays, with its entry, and is reported once the
// rest are swept.
func (s *Store) Sweep(ctx context.Context) (int, error) {
	s.sweepM.Lock()
	defer s.sweepM.Unlock()
	total := 0
	var from []byte
	var unread error
	for {
		n, next, bad, err := s.sweepStep(ctx, from)
		total += n
		if unread == nil && bad != nil {
			unread = fmt.Errorf("idem: pebble sweep skipped a record it cannot read: %w", bad)
		}
		if err != nil || next == nil {
			return total, cmp.Or(err, unread)
		}
		from = next
	}
}

// sweepStep finds up to one batch of expiry entries due at now, from the
// entry from on, and deletes their records, each re-checked under its
// stripe lock: a takeover or an ExtendLease may have pushed the record's
// expiry out since the entry was read, and then only the stale entry goes.
// next is where the following step starts, nil when no entries are left;
// bad is the first record it could not read.
func (s *Store) sweepStep(ctx context.Context, from []byte) (deleted int, next []byte, bad, err error) {
	if err := s.enter(ctx); err != nil {
		return 0, nil, nil, err
	}
	defer s.mu.RUnlock()
	now := s.now()
	entries, err := s.dueEntries(ctx, now, from, s.opts.sweepBatch)
	if err != nil {
		return 0, nil, nil, err
	}
	if len(entries) == s.opts.sweepBatch {
		next = append(slices.Clone(entries[len(entries)-1]), 0)
	}
	for len(entries) > 0 {
		chunk := entries[:min(sweepChunk, len(entries))]
		entries = entries[len(chunk):]
		n, unread, err := s.sweepChunk(chunk, now)
		deleted += n
		s.swept.Add(uint64(n))
		bad = cmp.Or(bad, unread)
		if err != nil {
			return deleted, nil, bad, err
		}
		if err := ctx.Err(); err != nil {
			return deleted, nil, bad, err
		}
	}
	return deleted, next, bad, nil
}

// dueEntries returns up to limit expiry entries due at now, oldest first,
// from the key from on (nil: the first).
func (s *Store) dueEntries(ctx context.Context, now time.Time, from []byte, limit int) ([][]byte, error) {
	if from == nil {
		from = []byte{prefixExpiry}
	}
	it, err := s.db.NewIterWithContext(ctx, &pebbledb.IterOptions{LowerBound: from, UpperBound: expiryBound(now)})
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

// sweepChunk deletes the records of entries that are still expired at now
// (or at the clock's time once their stripes are held, if that is earlier),
// holding their stripes for one unsynced commit, and returns how many it
// deleted. It never waits for a stripe: a writer holds its stripe until
// its batch is synced, and a sweep waiting for it while holding the
// stripes it already had would stall every writer behind those. An entry
// whose stripe is busy is left for a later sweep (an expired record reads
// as absent until then). So is a record that cannot be read (unread is the
// first such error): it fails only itself, not the deletion of the rest.
func (s *Store) sweepChunk(entries [][]byte, now time.Time) (deleted int, unread, err error) {
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
	// The clock again, now that no writer holds these stripes: one stepped
	// back since now was read may have written a record that expires
	// before now, yet is live at the clock's time. Deleting it would hand
	// its key out again.
	if t := s.now(); t.Before(now) {
		now = t
	}
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
			unread = cmp.Or(unread, err)
			continue
		}
		switch {
		case rec == nil:
		case !rec.Live(now):
			if err := del(b, key, rec); err != nil {
				return 0, unread, s.writeErr(err)
			}
			gone[string(key)] = true
			deleted++
		}
		if rec == nil || !bytes.Equal(expiryKey(rec.ExpiresAt, key), entry) {
			// An entry left behind by an earlier expiry of the record.
			if err := b.Delete(entry, nil); err != nil {
				return 0, unread, s.writeErr(err)
			}
		}
	}
	if b.Empty() {
		return 0, unread, nil
	}
	// Unsynced: a delete lost in a crash leaves an expired record, which
	// reads as absent and the next sweep removes. A later synced commit
	// makes it durable anyway, since the WAL is written in order.
	if err := s.commit(b, pebbledb.NoSync); err != nil {
		return 0, unread, s.writeErr(err)
	}
	return deleted, unread, nil
}
