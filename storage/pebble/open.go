package pebble

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"golang.org/x/sys/unix"

	"github.com/idemhq/idem/storage/internal/coalesce"
)

// Open opens the idem store in dir, creating it when dir does not exist or
// is empty. It refuses, with an error naming dir, a directory that another
// process has open, one that holds files but no Pebble store, and a store
// that is corrupt or truncated: never an empty store over lost data.
func Open(dir string, opts ...Option) (*Store, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if dir == "" {
		return nil, errors.New("idem: pebble store needs a directory")
	}
	if err := o.sync.check(); err != nil {
		return nil, fmt.Errorf("idem: pebble store: %w", err)
	}
	path, err := prepareDir(dir)
	if err != nil {
		return nil, err
	}
	lock, err := pebbledb.LockDirectory(path, vfs.Default)
	if err != nil {
		return nil, lockError(dir, err)
	}
	var corruption atomic.Pointer[string]
	db, fsCloser, ring, err := openLocked(dir, path, lock, &o, &corruption)
	if err != nil {
		_ = lock.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		db:         db,
		dir:        dir,
		clock:      o.clock,
		log:        o.logger,
		opts:       o,
		seed:       newSeed(),
		lock:       lock,
		stopCtx:    ctx,
		stopCancel: cancel,
		corruption: &corruption,
		fsCloser:   fsCloser,
		ring:       ring,
	}
	if o.coalesce > 0 {
		// A batch handles one record twice in order, so no Distinct.
		s.co = coalesce.NewOps(o.coalesce, coalesceMax, coalesce.Backend{
			Reserve: s.reserve, Complete: s.complete, BatchReserve: s.BatchReserve, BatchComplete: s.BatchComplete,
		})
	}
	s.pres.seed = maphash.MakeSeed()
	s.pres.minKeys = o.filterMinKeys
	s.pres.building.Store(true)
	s.rebuild(s.filterEstimate())
	if o.sweepInterval > 0 {
		s.goBackground(func() { s.sweepLoop(o.sweepInterval) })
	}
	return s, nil
}

func corrupt(dir string, err error) error {
	return fmt.Errorf("idem: pebble store at %s is corrupt: %v", dir, err)
}

// prepareDir creates dir if needed and refuses one that is not a directory
// or holds files that are not Pebble's. It returns the absolute path, so
// that Pebble's in-process lock table sees one name per directory.
func prepareDir(dir string) (string, error) {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return "", fmt.Errorf("idem: pebble store at %s cannot be created: %v", dir, err)
		}
	case err != nil:
		return "", fmt.Errorf("idem: pebble store at %s cannot be opened: %v", dir, err)
	case !st.IsDir():
		return "", fmt.Errorf("idem: pebble store at %s is not a directory", dir)
	}
	// Pebble opened a store it could not write to and retried its flush
	// forever, deaf to SIGTERM; refuse it here instead.
	// With the effective IDs and capabilities, as the writes will be made.
	if err := unix.Faccessat(unix.AT_FDCWD, dir, unix.W_OK|unix.X_OK, unix.AT_EACCESS); err != nil {
		return "", fmt.Errorf("idem: pebble store at %s is not writable by this process: %v", dir, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("idem: pebble store at %s cannot be read: %v", dir, err)
	}
	for _, e := range ents {
		if !pebbleFile(e.Name()) {
			return "", fmt.Errorf("idem: pebble store at %s: directory holds %q, which is not a pebble store's file; refusing to use it (the store needs a directory of its own: move that file or pick another directory)", dir, e.Name())
		}
	}
	path, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("idem: pebble store at %s: %v", dir, err)
	}
	if p, err := filepath.EvalSymlinks(path); err == nil {
		path = p
	}
	return path, nil
}

// pebbleFile reports whether name is a file Pebble writes, or the
// lost+found of a volume root, which a fresh store may share.
func pebbleFile(name string) bool {
	switch {
	case name == "LOCK", name == "CURRENT", name == "lost+found", name == sidecarName,
		strings.HasPrefix(name, "MANIFEST-"), strings.HasPrefix(name, "OPTIONS-"),
		strings.HasPrefix(name, "marker."), strings.HasPrefix(name, "temporary."),
		strings.HasSuffix(name, ".sst"), strings.HasSuffix(name, ".log"), strings.HasSuffix(name, ".blob"):
		return true
	}
	return false
}

// hasData reports whether the directory holds anything a store writes
// beyond its lock.
func hasData(path string) bool {
	ents, _ := os.ReadDir(path)
	for _, e := range ents {
		if n := e.Name(); n != "LOCK" && n != "lost+found" {
			return true
		}
	}
	return false
}

// unfinishedCreation reports whether the files in path are what Pebble
// leaves when it is stopped while creating a store: its manifest and
// options, but no marker or CURRENT (a store that was), no table, no log
// and no idem sidecar. Any store that ever took a write has a log, and
// any that idemd opened has the sidecar, so such a directory never held a
// record.
func unfinishedCreation(path string) bool {
	ents, err := os.ReadDir(path)
	if err != nil {
		return false
	}
	for _, e := range ents {
		switch n := e.Name(); {
		case n == "LOCK", n == "lost+found",
			strings.HasPrefix(n, "MANIFEST-"), strings.HasPrefix(n, "OPTIONS-"),
			strings.HasPrefix(n, "temporary."):
		default:
			return false
		}
	}
	return true
}

// clearUnfinished removes what an unfinished creation left, the lock and a
// volume's lost+found excepted.
func clearUnfinished(path string) error {
	ents, err := os.ReadDir(path)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if n := e.Name(); n != "LOCK" && n != "lost+found" {
			if err := os.Remove(filepath.Join(path, n)); err != nil {
				return err
			}
		}
	}
	return nil
}

func lockError(dir string, err error) error {
	var pe *os.PathError
	switch {
	case errors.As(err, &pe) && pe.Op == "open" && errors.Is(err, syscall.EACCES):
		// The lock file itself cannot be created or opened.
		return fmt.Errorf("idem: pebble store at %s cannot be locked: permission denied creating %s", dir, filepath.Base(pe.Path))
	case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EACCES):
		return fmt.Errorf("idem: pebble store at %s is in use by another process", dir)
	case strings.Contains(err.Error(), "held by current process"):
		return fmt.Errorf("idem: pebble store at %s is already open in this process", dir)
	}
	return fmt.Errorf("idem: pebble store at %s cannot be locked: %v", dir, err)
}

// openLocked opens the store in path, whose lock the caller holds, and
// checks it: its files, every table's footer and properties, and the idem
// format marker. The closer stops the disk-health checker and releases the
// io_uring, after the DB.
func openLocked(dir, path string, lock *pebbledb.Lock, o *options, corruption *atomic.Pointer[string]) (*pebbledb.DB, io.Closer, *ringFS, error) {
	desc, err := pebbledb.Peek(path, vfs.Default)
	if err != nil {
		if strings.Contains(err.Error(), "unknown format major version") {
			// Not damage: an operator told "corrupt" may wipe a store
			// that the idemd which wrote it opens fine.
			return nil, nil, nil, fmt.Errorf("idem: pebble store at %s was written by a newer idemd (%v); open it with that version", dir, err)
		}
		return nil, nil, nil, corrupt(dir, err)
	}
	if !desc.Exists && hasData(path) {
		if !unfinishedCreation(path) {
			return nil, nil, nil, corrupt(dir, errors.New("files present but no current MANIFEST"))
		}
		// idemd was stopped while Pebble created the store, before any
		// write: start it again from nothing.
		if err := clearUnfinished(path); err != nil {
			return nil, nil, nil, fmt.Errorf("idem: pebble store at %s: clearing an unfinished creation: %v", dir, err)
		}
		o.logger.Info("idem: pebble store creation had been interrupted before any write; created afresh", "dir", dir)
	}
	po := o.pebbleOptions()
	po.Lock = lock
	// Pebble wraps its FS in a disk-health checker whose goroutine only a
	// successful DB's Close stops; owning the wrapper stops it on a refused
	// open too.
	base, ring := syncFS(dir, o)
	if o.wrapFS != nil {
		base = o.wrapFS(base)
	}
	fs, healthCloser := vfs.WithDiskHealthChecks(base, 5*time.Second, nil, func(info vfs.DiskSlowInfo) {
		o.logger.Warn("idem: pebble disk is slow", "dir", dir, "op", info.OpType.String(), "path", info.Path, "duration", info.Duration)
	})
	fsCloser := closers{healthCloser, ring.closer()}
	po.FS = fs
	// Pebble's default reaction to a damaged file is Fatalf. Report it as
	// an error instead: Open refuses the store, and a corruption found
	// later fails the reads that hit it and turns Ping unhealthy.
	po.EventListener = &pebbledb.EventListener{DataCorruption: func(info pebbledb.DataCorruptionInfo) {
		msg := fmt.Sprintf("%s: %v", info.Path, info.Details)
		corruption.Store(&msg)
		o.logger.Error("idem: pebble store is corrupt", "dir", dir, "info", msg)
	}}
	db, err := pebbledb.Open(path, po)
	if err != nil {
		fsCloser.Close()
		if desc.Exists || pebbledb.IsCorruptionError(err) {
			return nil, nil, nil, corrupt(dir, err)
		}
		return nil, nil, nil, fmt.Errorf("idem: pebble store at %s cannot be opened: %v", dir, err)
	}
	if err := checkStore(db, path); err != nil {
		_ = db.Close()
		fsCloser.Close()
		var nf *newerFormatError
		if errors.As(err, &nf) {
			return nil, nil, nil, fmt.Errorf("idem: pebble store at %s was written by a newer idemd (format %q; this one reads %q); open it with that version", dir, nf.format, metaFormatValue)
		}
		if errors.Is(err, errNotIdem) {
			return nil, nil, nil, fmt.Errorf("idem: pebble store at %s is not an idem store (%v); refusing to use it", dir, err)
		}
		return nil, nil, nil, corrupt(dir, err)
	}
	return db, fsCloser, ring, nil
}

var errNotIdem = errors.New("no idem format marker")

// newerFormatError is an idem format marker of a later layout than
// metaFormatValue: the store is idem's, just not this idemd's to read.
type newerFormatError struct{ format string }

func (e *newerFormatError) Error() string { return fmt.Sprintf("newer idem format %q", e.format) }

// newerFormat reports whether v is an idem marker of a layout after this
// one ("idem/N", N above ours).
func newerFormat(v []byte) bool {
	n, ok := strings.CutPrefix(string(v), "idem/")
	cur, _ := strings.CutPrefix(string(metaFormatValue), "idem/")
	ver, err := strconv.Atoi(n)
	curVer, _ := strconv.Atoi(cur)
	return ok && err == nil && ver > curVer
}

// sidecarName is a file beside Pebble's that says the store was initialised
// by idem. Pebble ignores files it does not know. Together with the marker
// key it tells a fresh directory from one whose data is gone: a store that
// opens without its marker but with the sidecar has lost records.
const sidecarName = "IDEM"

// checkStore reads every table's properties, which opens and checksums each
// table's footer and meta blocks: a garbled or truncated table fails here
// at start instead of on the first unlucky read. It then checks, or on a
// fresh store writes, the idem format marker and the sidecar.
func checkStore(db *pebbledb.DB, path string) error {
	if _, err := db.SSTables(pebbledb.WithProperties()); err != nil {
		return err
	}
	sidecar := filepath.Join(path, sidecarName)
	_, statErr := os.Stat(sidecar)
	hasSidecar := statErr == nil
	v, closer, err := db.Get(metaFormatKey)
	switch {
	case err == nil:
		defer closer.Close()
		if newerFormat(v) {
			return &newerFormatError{format: string(v)}
		}
		if string(v) != string(metaFormatValue) {
			return fmt.Errorf("%w: unknown format %q", errNotIdem, v)
		}
		if hasSidecar {
			return nil
		}
		return writeSidecar(sidecar)
	case !errors.Is(err, pebbledb.ErrNotFound):
		return err
	case hasSidecar:
		return errors.New("the idem format marker is missing, so records were lost")
	}
	it, err := db.NewIter(nil)
	if err != nil {
		return err
	}
	empty := !it.First()
	if err := it.Close(); err != nil {
		return err
	}
	if !empty {
		return errNotIdem
	}
	if err := db.Set(metaFormatKey, metaFormatValue, pebbledb.Sync); err != nil {
		return err
	}
	return writeSidecar(sidecar)
}

// writeSidecar writes and syncs the sidecar and its directory entry.
func writeSidecar(name string) error {
	f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(metaFormatValue, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(name))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
