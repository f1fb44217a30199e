package pebble

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/jonboulle/clockwork"

	"github.com/idemhq/idem/storage"
)

// badTablesFS garbles what Pebble reads from its tables while bad is set,
// as a disk returning rotten blocks would: the block checksums catch it
// and Pebble reports corruption.
type badTablesFS struct {
	vfs.FS
	bad     atomic.Bool
	garbled atomic.Int64 // reads garbled
}

func (fs *badTablesFS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.Open(name, opts...)
	if err != nil || !strings.HasSuffix(name, ".sst") {
		return f, err
	}
	return badTable{File: f, fs: fs}, nil
}

type badTable struct {
	vfs.File
	fs *badTablesFS
}

func (f badTable) ReadAt(p []byte, off int64) (int, error) {
	n, err := f.File.ReadAt(p, off)
	if f.fs.bad.Load() && n > 0 {
		f.fs.garbled.Add(1)
		for i := range p[:n] {
			p[i] ^= 0x5A
		}
	}
	return n, err
}

// TestDeleteKeepsRecordOnCorruptRead: Delete removes a record it cannot
// decode, which is how an operator frees a damaged key. A read that
// failed because Pebble found its files corrupt is no such record: the
// record may be intact (the fault is elsewhere in a block, or passing).
// Delete took that error for a damaged record too, removed the record
// unseen and answered success, its expiry entry left behind.
func TestDeleteKeepsRecordOnCorruptRead(t *testing.T) {
	ctx := testCtx(t)
	fs := &badTablesFS{}
	s, err := Open(t.TempDir(), WithClock(clockwork.NewFakeClockAt(epoch)), WithSweepInterval(0), WithCacheSize(1),
		WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		withFS(func(base vfs.FS) vfs.FS { fs.FS = base; return fs }))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	id := func(i int) storage.ID { return storage.ID{Tenant: "t", Namespace: "ns", Key: fmt.Sprintf("k%04d", i)} }
	for i := range 500 {
		if _, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id(i), Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.db.Flush(); err != nil {
		t.Fatal(err)
	}
	fs.bad.Store(true)
	rec, err := s.Delete(ctx, id(250))
	fs.bad.Store(false)
	if fs.garbled.Load() == 0 {
		t.Fatal("Delete() read no table while reads were garbled: nothing was checked")
	}
	if err == nil {
		t.Fatalf("Delete() over a corrupt read = %+v, nil; want the read's error, the record kept", rec)
	}
	if errors.Is(err, storage.ErrDamaged) {
		t.Errorf("Delete() error = %v; a corrupt read is not a damaged record", err)
	}
	if r, err := s.Lookup(ctx, id(250)); err != nil || r.State != storage.StateInProgress {
		t.Errorf("Lookup() after the refused Delete = %+v, %v; want the record as it was", r, err)
	}
}
