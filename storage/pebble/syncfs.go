package pebble

import (
	"errors"
	"io"
	"sync/atomic"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/idemhq/idem/storage/internal/uring"
)

// syncFS is the file system Pebble writes through: vfs.Default, with its
// syncs run through an io_uring unless o.sync says fdatasync or the kernel
// refuses a ring (then the ringFS is nil).
func syncFS(dir string, o *options) (vfs.FS, *ringFS) {
	if o.sync == SyncFdatasync {
		return vfs.Default, nil
	}
	ring, err := uring.New()
	if err != nil {
		o.logger.Info("idem: pebble syncs with blocking calls: no io_uring", "dir", dir, "err", err)
		return vfs.Default, nil
	}
	fs := &ringFS{FS: vfs.Default, ring: ring}
	return fs, fs
}

// closer releases the ring, after the DB is closed.
func (fs *ringFS) closer() io.Closer {
	if fs == nil {
		return nopCloser{}
	}
	return fs.ring
}

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// closers closes each in order and returns the first error.
type closers []io.Closer

func (cs closers) Close() error {
	var first error
	for _, c := range cs {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// ringFS hands the Sync and SyncData of every file Pebble writes to an
// io_uring (see storage/internal/uring for why), and leaves everything else
// to the file system under it.
type ringFS struct {
	vfs.FS
	ring  *uring.Ring
	syncs atomic.Uint64 // syncs the ring ran, for tests
}

func (fs *ringFS) wrap(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return f, err
	}
	return ringFile{File: f, fs: fs}, nil
}

func (fs *ringFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	return fs.wrap(fs.FS.Create(name, category))
}

func (fs *ringFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	return fs.wrap(fs.FS.ReuseForWrite(oldname, newname, category))
}

func (fs *ringFS) OpenReadWrite(name string, category vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	return fs.wrap(fs.FS.OpenReadWrite(name, category, opts...))
}

type ringFile struct {
	vfs.File
	fs *ringFS
}

func (f ringFile) Sync() error     { return f.sync(false, f.File.Sync) }
func (f ringFile) SyncData() error { return f.sync(true, f.File.SyncData) }

// sync runs the sync through the ring. Where the kernel's ring cannot run
// it (EINVAL or EOPNOTSUPP: an operation it lacks, or a file that cannot be
// synced that way) or did not take it, the file's own call answers, so the
// result is never weaker than without the ring.
func (f ringFile) sync(datasync bool, direct func() error) error {
	err := f.fs.ring.Fsync(f.Fd(), datasync)
	f.fs.syncs.Add(1)
	if errors.Is(err, uring.ErrNotSubmitted) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EOPNOTSUPP) {
		return direct()
	}
	return err
}

// withFS wraps the file system Pebble writes through, so tests can hold
// its syncs as a slow disk would.
func withFS(wrap func(vfs.FS) vfs.FS) Option { return func(o *options) { o.wrapFS = wrap } }
