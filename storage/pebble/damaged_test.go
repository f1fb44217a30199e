package pebble

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/jonboulle/clockwork"

	"github.com/idemhq/idem/internal/keyhash"
	"github.com/idemhq/idem/storage"
)

// damage overwrites id's stored value with bytes no codec version reads.
// The presence filter learns the key as a write through the store would
// tell it, or a filter built before the write would answer "absent".
func damage(t *testing.T, s *Store, id storage.ID) {
	t.Helper()
	key := recordKey(id)
	s.pres.mu.RLock()
	defer s.pres.mu.RUnlock()
	s.pres.add(key)
	if err := s.db.Set(key, []byte{9, 9, 9}, pebbledb.Sync); err != nil {
		t.Fatal(err)
	}
}

// TestSweepPassesDamagedRecord: the sweep reads each due record before
// deleting it. One it cannot decode stopped every sweep at that record,
// the oldest due, so nothing expired was ever deleted again. It is left
// (without its record the sweep cannot tell it expired) and reported,
// and later steps start after it, whatever the step size.
func TestSweepPassesDamagedRecord(t *testing.T) {
	for _, batch := range []int{1, 2, 1000} {
		t.Run(fmt.Sprintf("batch=%d", batch), func(t *testing.T) {
			ctx := testCtx(t)
			clock := clockwork.NewFakeClockAt(epoch)
			s, err := Open(t.TempDir(), WithClock(clock), WithSweepInterval(0), WithSweepBatch(batch))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			id := func(k string) storage.ID { return storage.ID{Tenant: "t", Namespace: "ns", Key: k} }
			keys := []string{"a", "b", "c", "d", "e"}
			for _, k := range keys {
				if _, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id(k), Fingerprint: []byte("fp"), LeaseTTL: time.Second, Retention: time.Minute}); err != nil {
					t.Fatal(err)
				}
				clock.Advance(time.Second)
			}
			damage(t, s, id("a"))
			clock.Advance(time.Hour)
			n, err := s.Sweep(ctx)
			if n != len(keys)-1 {
				t.Errorf("Sweep() deleted %d, want %d (all but the damaged record)", n, len(keys)-1)
			}
			if err == nil {
				t.Errorf("Sweep() error = nil, want the damaged record reported")
			}
			if got := countPrefix(t, s, prefixRecord); got != 1 {
				t.Errorf("records left = %d, want 1 (the damaged one)", got)
			}
		})
	}
}

// TestSweepLogHashesDamagedKey: the background sweep reports a record it
// cannot read every time it runs, until an admin deletes it. Its line
// carried the record's key in plain text, where every other log line of
// idem names a key by its hash.
func TestSweepLogHashesDamagedKey(t *testing.T) {
	ctx := testCtx(t)
	clock := clockwork.NewFakeClockAt(epoch)
	lines := make(chan string, 16)
	log := slog.New(slog.NewJSONHandler(lineWriter(lines), nil))
	s, err := Open(t.TempDir(), WithClock(clock), WithSweepInterval(time.Second), WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const key = "customer-4711@example.com"
	id := storage.ID{Tenant: "t", Namespace: "ns", Key: key}
	if _, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id, Fingerprint: []byte("fp"), LeaseTTL: time.Second, Retention: time.Minute}); err != nil {
		t.Fatal(err)
	}
	damage(t, s, id)
	if err := clock.BlockUntilContext(ctx, 1); err != nil { // the sweep's ticker
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	for {
		select {
		case <-ctx.Done():
			t.Fatal("no sweep line about the damaged record")
		case l := <-lines:
			if !strings.Contains(l, "sweep") {
				continue
			}
			if strings.Contains(l, key) {
				t.Errorf("sweep line names the key in plain text: %s", l)
			}
			if want := keyhash.Of(key); !strings.Contains(l, want) {
				t.Errorf("sweep line lacks key_hash %s: %s", want, l)
			}
			return
		}
	}
}

// lineWriter sends each write (one log line) to lines, dropping it when
// lines is full, so a store that logs more never blocks on the test.
type lineWriter chan<- string

func (w lineWriter) Write(p []byte) (int, error) {
	select {
	case w <- string(p):
	default:
	}
	return len(p), nil
}

// TestSweepErrorHashesUnparsableKey: a record whose key does not even
// parse is named in the sweep's error, which is logged; it carried the raw
// key bytes.
func TestSweepErrorHashesUnparsableKey(t *testing.T) {
	ctx := testCtx(t)
	clock := clockwork.NewFakeClockAt(epoch)
	s, err := Open(t.TempDir(), WithClock(clock), WithSweepInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	key := append([]byte{prefixRecord}, "customer-4711@example.com"...)
	b := s.db.NewBatch()
	for k, v := range map[string][]byte{string(key): {9, 9, 9}, string(expiryKey(epoch, key)): nil} {
		if err := b.Set([]byte(k), v, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		t.Fatal(err)
	}
	s.pres.mu.RLock()
	s.pres.add(key)
	s.pres.mu.RUnlock()
	clock.Advance(time.Hour)
	_, err = s.Sweep(ctx)
	if err == nil {
		t.Fatal("Sweep() = nil, want the record it cannot read reported")
	}
	if strings.Contains(err.Error(), "customer-4711") || !strings.Contains(err.Error(), keyhash.Of(string(key))) {
		t.Errorf("Sweep() error = %q, want the key by its hash only", err)
	}
}
