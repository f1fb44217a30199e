package pebble

import (
	"errors"
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

var errInjectedSync = errors.New("injected: log sync failed")

// failSyncFS fails the syncs of Pebble's log while fail is set, as a disk
// that loses a write would.
type failSyncFS struct {
	vfs.FS
	fail atomic.Bool
}

func (fs *failSyncFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return failSyncFile{File: f, fs: fs}, nil
}

func (fs *failSyncFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return fs.wrap(name, f, err)
}

func (fs *failSyncFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, c)
	return fs.wrap(newname, f, err)
}

type failSyncFile struct {
	vfs.File
	fs *failSyncFS
}

func (f failSyncFile) Sync() error {
	if f.fs.fail.Load() {
		return errInjectedSync
	}
	return f.File.Sync()
}

func (f failSyncFile) SyncData() error {
	if f.fs.fail.Load() {
		return errInjectedSync
	}
	return f.File.SyncData()
}

// TestFailedSyncIsNeverReported: Pebble makes a batch readable before its
// log sync and, when the sync fails, calls Fatalf, which panics. The panic
// unwound through the writer's deferred unlocks, so a call waiting on the
// same stripe (or any call, where something recovers the panic) read the
// unsynced record and answered from it with no write of its own: Reserve
// answered IN_PROGRESS or COMPLETED, Complete's retry succeeded, Lookup
// returned the record, all of which a crash then loses. After a failed
// commit the store must answer nothing from what it holds.
func TestFailedSyncIsNeverReported(t *testing.T) {
	id := storage.ID{Tenant: "t", Namespace: "ns", Key: "k"}
	rp := storage.ReserveParams{ID: id, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour}
	for _, tc := range []struct {
		name string
		// setup runs with syncs working; fail runs the call whose sync fails.
		setup func(t *testing.T, s *Store) uint64
		fail  func(s *Store, token uint64) error
	}{
		{"Reserve", func(t *testing.T, s *Store) uint64 { return 0 }, func(s *Store, _ uint64) error {
			_, _, err := s.Reserve(testCtx(t), rp)
			return err
		}},
		{"Complete", func(t *testing.T, s *Store) uint64 {
			_, rec, err := s.Reserve(testCtx(t), rp)
			if err != nil {
				t.Fatal(err)
			}
			return rec.Token
		}, func(s *Store, token uint64) error {
			_, err := s.Complete(testCtx(t), storage.CompleteParams{ID: id, Token: token, Result: &storage.Result{Body: []byte("done")}, Retention: time.Hour})
			return err
		}},
		{"BatchReserve", func(t *testing.T, s *Store) uint64 { return 0 }, func(s *Store, _ uint64) error {
			_, err := s.BatchReserve(testCtx(t), []storage.ReserveParams{rp})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			fs := &failSyncFS{}
			s, err := Open(t.TempDir(), WithClock(clockwork.NewFakeClockAt(epoch)), WithSweepInterval(0), WithCoalesce(0),
				WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
				withFS(func(base vfs.FS) vfs.FS { fs.FS = base; return fs }))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			token := tc.setup(t, s)
			fs.fail.Store(true)
			func() {
				defer func() { _ = recover() }() // Pebble's Fatalf
				if err := tc.fail(s, token); err == nil {
					t.Fatalf("%s with a failing log sync succeeded", tc.name)
				}
			}()
			fs.fail.Store(false)

			if out, rec, err := s.Reserve(ctx, rp); err == nil {
				t.Errorf("Reserve() after a failed sync = %v, %+v; want an error, not an answer from an unsynced record", out, rec)
			}
			if rec, err := s.Lookup(ctx, id); err == nil {
				t.Errorf("Lookup() after a failed sync = %+v; want an error", rec)
			}
			if token != 0 {
				if _, err := s.Complete(ctx, storage.CompleteParams{ID: id, Token: token, Result: &storage.Result{Body: []byte("done")}, Retention: time.Hour}); err == nil {
					t.Errorf("Complete() retried after its failed sync succeeded; want an error")
				}
			}
			if res, err := s.BatchReserve(ctx, []storage.ReserveParams{rp}); err == nil && res[0].Err == nil {
				t.Errorf("BatchReserve() after a failed sync = %v; want an error", res[0].Outcome)
			}
			if err := s.Ping(ctx); !errors.Is(err, storage.ErrUnavailable) {
				t.Errorf("Ping() after a failed sync = %v; want ErrUnavailable", err)
			}
		})
	}
}
