package memory

import (
	"bytes"
	"fmt"
	"hash/maphash"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/idemhq/idem/storage/storagetest"
)

// TestStress runs storagetest.Stress on few shards, so tables grow,
// compact and sweep often, and checks every table's structure between
// sweeps: the race detector does not see the arena's off-heap memory.
// IDEM_STRESS=5m runs it for five minutes.
func TestStress(t *testing.T) {
	d := storagetest.StressDuration(t, 2*time.Second)
	clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC))
	s := New(WithClock(clock), WithShards(4), WithSweepInterval(20*time.Millisecond))
	defer s.Close()
	sweeps := 0
	n := storagetest.Stress(t, storagetest.StressConfig{
		Store:    s,
		Clock:    clock,
		Duration: d,
		Sweep: func() error {
			sweeps++
			s.Sweep()
			return s.checkTables()
		},
	})
	if err := s.checkTables(); err != nil {
		t.Error(err)
	}
	if got := s.stored(); got != 0 && !t.Failed() {
		t.Errorf("after the last sweep %d records are still stored", got)
	}
	t.Logf("%d calls in %v, %d table checks", n, d, sweeps)
}

// checkTables checks every shard's table: each slot is reachable from its
// home without crossing an empty slot, holds an entry whose key hashes to
// its tag and whose record decodes with the slot's expiry, and the counts
// of slots and of live arena bytes agree.
func (s *Store) checkTables() error {
	for si := range s.shards {
		sh := &s.shards[si]
		sh.mu.RLock()
		err := s.checkTable(si, &sh.t)
		sh.mu.RUnlock()
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) checkTable(si int, t *table) error {
	n, live := 0, 0
	m := len(t.slots) - 1
	for i, sl := range t.slots {
		if sl.tag == 0 {
			continue
		}
		n++
		if int(sl.ref>>32) >= len(t.chunks) || int(uint32(sl.ref))+entryHeader > len(t.chunks[sl.ref>>32].b) {
			return fmt.Errorf("shard %d slot %d: ref %x outside the arena", si, i, sl.ref)
		}
		k, v := t.entry(sl.ref)
		live += entryHeader + len(k) + len(v)
		h := maphash.Bytes(s.seed, k)
		if tagOf(h) != sl.tag || int((h>>1)&s.mask) != si {
			return fmt.Errorf("shard %d slot %d: key %q does not hash to the slot's tag", si, i, k)
		}
		for j := t.home(sl.tag); j != i; j = (j + 1) & m {
			if t.slots[j].tag == 0 {
				return fmt.Errorf("shard %d slot %d: unreachable from its home %d (empty slot %d)", si, i, t.home(sl.tag), j)
			}
		}
		if fi, found := t.find(sl.tag, k); !found || fi != i {
			return fmt.Errorf("shard %d slot %d: find(%q) = %d, %v", si, i, k, fi, found)
		}
		id := parseKey(string(k))
		r := decode(v, id)
		if r.ExpiresAt.UnixNano() != sl.expires {
			return fmt.Errorf("shard %d slot %d: slot expires %d, record %d", si, i, sl.expires, r.ExpiresAt.UnixNano())
		}
		if !bytes.Equal(appendKey(nil, r.ID), k) {
			return fmt.Errorf("shard %d slot %d: key %q decodes to %+v", si, i, k, r.ID)
		}
	}
	if n != t.n {
		return fmt.Errorf("shard %d: %d slots occupied, table counts %d", si, n, t.n)
	}
	if live != t.used-t.dead {
		return fmt.Errorf("shard %d: live entries hold %d bytes, table counts %d used - %d dead", si, live, t.used, t.dead)
	}
	return nil
}
