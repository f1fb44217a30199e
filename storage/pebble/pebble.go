package pebble

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/jonboulle/clockwork"

	"github.com/idemhq/idem/internal/keyhash"
	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/internal/coalesce"
)

var _ storage.Store = (*Store)(nil)

func init() {
	storage.Register("pebble", func(ctx context.Context, u *url.URL, o storage.OpenOptions) (storage.Store, error) {
		dir, err := dirFromURL(u)
		if err != nil {
			return nil, err
		}
		opts := []Option{WithLogger(o.Logger), WithClock(o.Clock)}
		q := u.Query()
		if v := q.Get("coalesce"); q.Has("coalesce") {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 1000 {
				return nil, fmt.Errorf("idem: pebble store URL: coalesce must be a count from 0 (off) to 1000, got %q", v)
			}
			opts = append(opts, WithCoalesce(n))
		}
		if v := Sync(q.Get("sync")); q.Has("sync") {
			// An empty sync= is a typo, not the default.
			if err := v.check(); err != nil {
				return nil, fmt.Errorf("idem: pebble store URL: %w", err)
			}
			opts = append(opts, WithSync(v))
		}
		return Open(dir, opts...)
	})
}

// dirFromURL reads the directory of pebble://PATH. A relative path parses
// with its first element as the URL host (pebble://./data has host "." and
// path "/data"), so host and path are joined back together.
func dirFromURL(u *url.URL) (string, error) {
	dir := u.Opaque
	if dir == "" {
		dir = u.Host + u.Path
	}
	if dir == "" {
		return "", errors.New("idem: pebble store URL names no directory (want pebble://PATH, e.g. pebble://./idem-data)")
	}
	// No shell expands ~ inside a URL; it would make a directory named ~.
	if dir == "~" || strings.HasPrefix(dir, "~/") {
		return "", fmt.Errorf("idem: pebble store URL path %q starts with ~, which is not expanded; give the home directory's path", dir)
	}
	q := u.Query()
	q.Del("coalesce")
	q.Del("sync")
	if len(q) > 0 {
		names := slices.Sorted(maps.Keys(q))
		return "", fmt.Errorf("idem: pebble store URL: unknown parameter %s (have coalesce=N, sync=io_uring|fdatasync)", strings.Join(names, ", "))
	}
	if u.User != nil {
		return "", errors.New("idem: pebble store URL takes a path and no user (want pebble://PATH)")
	}
	return dir, nil
}

// stripes is the number of per-key locks; a power of two well above the
// number of concurrent writers keeps unrelated keys from waiting on each
// other.
const stripes = 1024

type stripe struct {
	sync.Mutex
	_ [56]byte // one lock per cache line
}

// Store is the Pebble backend.
type Store struct {
	db     *pebbledb.DB
	dir    string
	clock  clockwork.Clock
	log    *slog.Logger
	opts   options
	seed   maphash.Seed
	locks  [stripes]stripe
	swept  atomic.Uint64
	sweepM sync.Mutex // one sweep at a time
	pres   presence   // which record keys may exist (filter.go)

	// mu guards closed; operations hold it shared so Close waits for them
	// and never closes the DB under a running call.
	mu     sync.RWMutex
	closed bool

	lock       *pebbledb.Lock
	fsCloser   io.Closer               // stops the disk-health checker, releases the ring
	ring       *ringFS                 // nil: syncs are blocking calls
	corruption *atomic.Pointer[string] // set when Pebble finds a damaged file
	stopCtx    context.Context         // ends when Close begins
	stopCancel context.CancelFunc
	bgMu       sync.Mutex     // orders goBackground before Close's wait
	background sync.WaitGroup // the sweep and presence filter scans
	closeOnce  sync.Once
	closeErr   error

	// co coalesces concurrent Reserves and Completes into one synced batch
	// each (nil: off).
	co      *coalesce.Ops
	commits atomic.Uint64 // synced commits of records, for tests

	// deleting counts Deletes between their commit and the end of its
	// sync: a scan that found nothing may have seen one (see syncSeen).
	deleting atomic.Int64

	// failed is set once a commit did not return (see commit): from then
	// on the store answers nothing from what it holds.
	failed atomic.Bool
}

type options struct {
	clock         clockwork.Clock
	logger        *slog.Logger
	cacheSize     int64
	memTableSize  uint64
	sweepInterval time.Duration
	sweepBatch    int
	coalesce      int
	filterMinKeys int64
	sync          Sync
	wrapFS        func(vfs.FS) vfs.FS // tests: sees every file Pebble opens
}

// Sync is how the store waits for the disk.
type Sync string

const (
	// SyncIOUring runs fsync and fdatasync through an io_uring, so a
	// waiting goroutine does not hold an OS thread in a blocking call. It
	// falls back to SyncFdatasync where the kernel offers no io_uring.
	SyncIOUring Sync = "io_uring"
	// SyncFdatasync makes the blocking calls. Both are equally durable.
	SyncFdatasync Sync = "fdatasync"
)

func (s Sync) check() error {
	if s != SyncIOUring && s != SyncFdatasync {
		return fmt.Errorf("sync must be %s or %s, got %q", SyncIOUring, SyncFdatasync, s)
	}
	return nil
}

// WithSync sets how the store waits for the disk (default SyncIOUring).
func WithSync(s Sync) Option { return func(o *options) { o.sync = s } }

// Option configures Open.
type Option func(*options)

// WithClock sets the node clock that stamps records and drives the sweep.
func WithClock(c clockwork.Clock) Option {
	return func(o *options) {
		if c != nil {
			o.clock = c
		}
	}
}

// WithLogger sets where the store and Pebble log.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// WithCacheSize sets Pebble's block cache size in bytes.
func WithCacheSize(n int64) Option { return func(o *options) { o.cacheSize = n } }

// WithCoalesce sets how many batches of concurrent Reserves (and, apart,
// of Completes) may be in flight at once: calls beyond them wait and share
// the next batch's synced commit. 0 commits each call on its own.
func WithCoalesce(n int) Option { return func(o *options) { o.coalesce = n } }

// WithSweepInterval sets how often the background sweep runs; 0 or less
// turns it off (Sweep can still be called).
func WithSweepInterval(d time.Duration) Option { return func(o *options) { o.sweepInterval = d } }

// WithSweepBatch sets how many expired records one sweep step deletes.
func WithSweepBatch(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.sweepBatch = n
		}
	}
}

func defaultOptions() options {
	return options{
		clock:  clockwork.NewRealClock(),
		logger: slog.Default(),
		// 64 MiB of block cache holds the index and filter blocks of a
		// store of several million records, so a point lookup costs at
		// most one data-block read, while keeping RSS far under 512 MiB.
		cacheSize: 64 << 20,
		// 32 MiB memtables absorb bursts of small records between flushes
		// without the 64 MiB default doubling resident memory.
		memTableSize:  32 << 20,
		sweepInterval: 5 * time.Second,
		sweepBatch:    1000,
		coalesce:      1,
		filterMinKeys: minFilterKeys,
		sync:          SyncIOUring,
	}
}

// pebbleOptions are tuned for idem's workload: small records, point reads
// by key on every call (most miss, for fresh keys), short range scans for
// List and the sweep, and synced writes.
func (o *options) pebbleOptions() *pebbledb.Options {
	po := &pebbledb.Options{
		CacheSize:                   o.cacheSize,
		MemTableSize:                o.memTableSize,
		MemTableStopWritesThreshold: 4,
		FormatMajorVersion:          pebbledb.FormatNewest,
		Logger:                      pebbleLogger{o.logger},
		// Writes sync on commit themselves; a minimum sync interval would
		// only add latency, since concurrent commits already share fsyncs.
		WALMinSyncInterval: nil,
	}
	for i := range po.Levels {
		// Bloom filters on every level, L0 included: Reserve of a new key
		// is a Get that misses, and a 10-bit filter (1% false positives)
		// answers it without reading a data block on each level. Blocks
		// stay at the 4 KiB default, which suits point reads of records
		// of a few hundred bytes.
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	return po
}

// pebbleLogger sends Pebble's chatter to slog at debug level and its errors
// at error level; Fatalf is Pebble declaring the store unusable.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg, "component", "pebble")
	panic("idem: pebble: " + msg)
}

func (s *Store) stripeOf(key []byte) int {
	return int(maphash.Bytes(s.seed, key) & (stripes - 1))
}

func (s *Store) lockFor(key []byte) *stripe { return &s.locks[s.stripeOf(key)] }

// enter admits a call unless the store is closed; the caller must call
// s.mu.RUnlock when it returns nil.
func (s *Store) enter(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return storage.ErrClosed
	}
	if err := s.failedErr(); err != nil {
		s.mu.RUnlock()
		return err
	}
	return nil
}

// failedErr is the error of every call once a commit failed. Calls check it
// again once they hold their stripes, which the failed writer held.
func (s *Store) failedErr() error {
	if !s.failed.Load() {
		return nil
	}
	return fmt.Errorf("%w: pebble store at %s stopped after a write to its log failed; restart idemd to recover what the disk holds", storage.ErrUnavailable, s.dir)
}

// commit commits b. Pebble makes a batch readable before its log sync ends
// and answers a failed sync with Fatalf, which panics through here: failed
// is set before the panic unwinds the caller's stripe locks, so no call
// waiting on them (nor any call, should something recover the panic)
// answers from a batch the disk may not hold.
func (s *Store) commit(b *pebbledb.Batch, o *pebbledb.WriteOptions) error {
	done := false
	defer func() {
		if !done {
			s.failed.Store(true)
		}
	}()
	err := b.Commit(o)
	done = true
	return err
}

// now is the store clock's time, without location or monotonic reading, so
// records answered from memory equal the same records read back from disk.
func (s *Store) now() time.Time {
	return time.Unix(0, s.clock.Now().UnixNano()).UTC()
}

// get reads the stored record, expired or not, or nil. The caller holds
// s.pres.mu shared.
func (s *Store) get(key []byte) (*storage.Record, error) {
	if s.pres.absent(key) {
		return nil, nil
	}
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebbledb.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, s.readErr(err)
	}
	defer closer.Close()
	r, err := decodeRecord(v)
	if err != nil {
		return nil, s.damaged(key, err)
	}
	return r, nil
}

// damaged is the error of the record at key whose value cannot be decoded.
func (s *Store) damaged(key []byte, err error) error {
	err = fmt.Errorf("idem: pebble store at %s: %w", s.dir, err)
	id, ok := parseRecordKey(key)
	if !ok {
		// Named by hash, as logs name keys: this error is logged.
		return fmt.Errorf("%w (a record key that does not parse, %s %s)", err, keyhash.Attr, keyhash.Of(string(key)))
	}
	return storage.Damaged(id, err)
}

func (s *Store) readErr(err error) error {
	if pebbledb.IsCorruptionError(err) {
		return fmt.Errorf("idem: pebble store at %s is corrupt: %v", s.dir, err)
	}
	return fmt.Errorf("%w: pebble read: %v", storage.ErrUnavailable, err)
}

func (s *Store) writeErr(err error) error {
	return fmt.Errorf("%w: pebble write: %v", storage.ErrUnavailable, err)
}

// put adds the writing of rec over old (the stored record, expired or not,
// or nil) to b, keeping the expiry index and the presence filter in step,
// and returns rec as it will read back. The caller holds s.pres.mu shared
// until b is committed.
// The expiry keys are built in a stack buffer, since the batch copies the
// keys it is given.
func (s *Store) put(b *pebbledb.Batch, key []byte, old, rec *storage.Record) (*storage.Record, error) {
	if old == nil {
		if capacity := s.pres.add(key); capacity > 0 {
			s.rebuild(capacity)
		}
	}
	v := encodeRecord(rec)
	var kbuf [256]byte
	if old != nil && !old.ExpiresAt.Equal(rec.ExpiresAt) {
		if err := b.Delete(appendExpiryKey(kbuf[:0], old.ExpiresAt, key), nil); err != nil {
			return nil, err
		}
	}
	if err := b.Set(key, v, nil); err != nil {
		return nil, err
	}
	if old == nil || !old.ExpiresAt.Equal(rec.ExpiresAt) {
		if err := b.Set(appendExpiryKey(kbuf[:0], rec.ExpiresAt, key), nil, nil); err != nil {
			return nil, err
		}
	}
	return decodeRecord(v)
}

func del(b *pebbledb.Batch, key []byte, old *storage.Record) error {
	if err := b.Delete(key, nil); err != nil {
		return err
	}
	return b.Delete(expiryKey(old.ExpiresAt, key), nil)
}

// update runs one read-decide-write on one record under its stripe lock.
// decide returns the record to write (nil for none) and the answer; a
// write is synced before update returns.
func (s *Store) update(ctx context.Context, id storage.ID, decide func(cur *storage.Record, now time.Time) (write, answer *storage.Record, err error)) (*storage.Record, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	growStack(len(id.Key))
	key := recordKey(id)
	l := s.lockFor(key)
	l.Lock()
	defer l.Unlock()
	if err := s.failedErr(); err != nil {
		return nil, err
	}
	s.pres.mu.RLock()
	defer s.pres.mu.RUnlock()
	cur, err := s.get(key)
	if err != nil {
		return nil, err
	}
	write, answer, err := decide(cur, s.now())
	if err != nil || write == nil {
		return answer, err
	}
	b := s.db.NewBatch()
	defer b.Close()
	rec, err := s.put(b, key, cur, write)
	if err != nil {
		return nil, s.writeErr(err)
	}
	s.commits.Add(1)
	if err := s.commit(b, pebbledb.Sync); err != nil {
		return nil, s.writeErr(err)
	}
	return rec, nil
}

// coalesceMax bounds a coalesced batch.
const coalesceMax = 256

// Reserve implements storage.Store. Concurrent Reserves share one synced
// commit (see WithCoalesce); each keeps its own answer.
func (s *Store) Reserve(ctx context.Context, p storage.ReserveParams) (storage.Outcome, *storage.Record, error) {
	if s.co == nil {
		return s.reserve(ctx, p)
	}
	return s.co.Reserve(ctx, p)
}

func (s *Store) reserve(ctx context.Context, p storage.ReserveParams) (storage.Outcome, *storage.Record, error) {
	var out storage.Outcome
	rec, err := s.update(ctx, p.ID, func(cur *storage.Record, now time.Time) (*storage.Record, *storage.Record, error) {
		o, write, answer := storage.ApplyReserve(cur, p, now)
		out = o
		return write, answer, nil
	})
	if err != nil {
		return 0, nil, err
	}
	return out, rec, nil
}

// Complete implements storage.Store, coalesced like Reserve.
func (s *Store) Complete(ctx context.Context, p storage.CompleteParams) (*storage.Record, error) {
	if s.co == nil {
		return s.complete(ctx, p)
	}
	return s.co.Complete(ctx, p)
}

func (s *Store) complete(ctx context.Context, p storage.CompleteParams) (*storage.Record, error) {
	return s.update(ctx, p.ID, func(cur *storage.Record, now time.Time) (*storage.Record, *storage.Record, error) {
		return storage.ApplyComplete(cur, p, now)
	})
}

// Release implements storage.Store.
func (s *Store) Release(ctx context.Context, id storage.ID, token uint64) (*storage.Record, error) {
	return s.update(ctx, id, func(cur *storage.Record, now time.Time) (*storage.Record, *storage.Record, error) {
		return storage.ApplyRelease(cur, token, now)
	})
}

// ExtendLease implements storage.Store.
func (s *Store) ExtendLease(ctx context.Context, id storage.ID, token uint64, ttl time.Duration) (*storage.Record, error) {
	return s.update(ctx, id, func(cur *storage.Record, now time.Time) (*storage.Record, *storage.Record, error) {
		w, err := storage.ApplyExtendLease(cur, token, ttl, now)
		return w, w, err
	})
}

// Checkpoint implements storage.Store.
func (s *Store) Checkpoint(ctx context.Context, id storage.ID, token uint64, cp storage.Checkpoint) (*storage.Record, error) {
	return s.update(ctx, id, func(cur *storage.Record, now time.Time) (*storage.Record, *storage.Record, error) {
		w, err := storage.ApplyCheckpoint(cur, token, cp, now)
		return w, w, err
	})
}

// ForceRelease implements storage.Store.
func (s *Store) ForceRelease(ctx context.Context, id storage.ID) (*storage.Record, error) {
	return s.update(ctx, id, func(cur *storage.Record, now time.Time) (*storage.Record, *storage.Record, error) {
		return storage.ApplyForceRelease(cur, now)
	})
}

// Delete implements storage.Store.
func (s *Store) Delete(ctx context.Context, id storage.ID) (*storage.Record, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	key := recordKey(id)
	l := s.lockFor(key)
	l.Lock()
	defer l.Unlock()
	if err := s.failedErr(); err != nil {
		return nil, err
	}
	s.pres.mu.RLock()
	defer s.pres.mu.RUnlock()
	cur, err := s.get(key)
	// Only a record that cannot be decoded is removed unseen: a read that
	// failed (Pebble found its files corrupt, the disk erred) says nothing
	// of the record, which may be intact.
	damaged := errors.Is(err, storage.ErrDamaged)
	if err != nil && !damaged {
		return nil, err
	}
	if !damaged && !cur.Live(s.now()) {
		return nil, storage.ErrNotFound
	}
	b := s.db.NewBatch()
	defer b.Close()
	if damaged {
		// Deleting a record that cannot be read is how an operator frees
		// its key; its expiry entry, whose time is unknown, is dropped by
		// the sweep when due (it finds no record).
		err = b.Delete(key, nil)
		cur = nil
	} else {
		err = del(b, key, cur)
	}
	if err != nil {
		return nil, s.writeErr(err)
	}
	s.commits.Add(1)
	s.deleting.Add(1)
	err = s.commit(b, pebbledb.Sync)
	s.deleting.Add(-1)
	if err != nil {
		return nil, s.writeErr(err)
	}
	return cur, nil
}

// Lookup implements storage.Store. It reads under the record's stripe
// lock, as a write does: a writer holds the lock until its batch is synced,
// and pebble makes a batch visible before its fsync ends, so without it a
// Lookup could report a write that a crash then loses.
func (s *Store) Lookup(ctx context.Context, id storage.ID) (*storage.Record, error) {
	return s.update(ctx, id, func(cur *storage.Record, now time.Time) (*storage.Record, *storage.Record, error) {
		if !cur.Live(now) {
			return nil, nil, storage.ErrNotFound
		}
		return nil, cur, nil
	})
}

// lockAll locks the stripes of keys in ascending stripe order, each once,
// so two batches can never wait on each other; it returns the unlock.
func (s *Store) lockAll(keys [][]byte) func() {
	idx := make([]int, len(keys))
	for i, k := range keys {
		idx[i] = s.stripeOf(k)
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	for _, i := range idx {
		s.locks[i].Lock()
	}
	return func() {
		for j := len(idx) - 1; j >= 0; j-- {
			s.locks[idx[j]].Unlock()
		}
	}
}

// batch runs decide for every item in order under all their stripe locks
// and commits every write in one synced batch. Later items see earlier
// items' writes, should the same ID appear twice.
func (s *Store) batch(ctx context.Context, ids []storage.ID, decide func(i int, cur *storage.Record, now time.Time) (write, answer *storage.Record, err error), answer func(i int, rec *storage.Record, err error)) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	growStack(len(ids))
	keys := make([][]byte, len(ids))
	for i, id := range ids {
		keys[i] = recordKey(id)
	}
	unlock := s.lockAll(keys)
	defer unlock()
	if err := s.failedErr(); err != nil {
		return err
	}
	s.pres.mu.RLock()
	defer s.pres.mu.RUnlock()
	now := s.now()
	b := s.db.NewBatch()
	defer b.Close()
	pending := map[string]*storage.Record{}
	for i, key := range keys {
		cur, ok := pending[string(key)]
		if ok {
			// Coalesced calls of one record share a batch: each answer
			// must be its caller's own.
			cur = cur.Clone()
		} else {
			var err error
			if cur, err = s.get(key); errors.Is(err, storage.ErrUnavailable) {
				return err
			} else if err != nil {
				// A damaged record fails its own item, not the callers
				// coalesced with it, as on the SQL store.
				answer(i, nil, err)
				continue
			}
		}
		write, ans, err := decide(i, cur, now)
		if err != nil || write == nil {
			answer(i, ans, err)
			continue
		}
		rec, err := s.put(b, key, cur, write)
		if err != nil {
			return s.writeErr(err)
		}
		pending[string(key)] = rec
		answer(i, rec, nil)
	}
	if b.Empty() {
		return nil
	}
	s.commits.Add(1)
	if err := s.commit(b, pebbledb.Sync); err != nil {
		return s.writeErr(err)
	}
	return nil
}

// BatchReserve implements storage.Store: one synced commit for the call.
func (s *Store) BatchReserve(ctx context.Context, items []storage.ReserveParams) ([]storage.ReserveResult, error) {
	ids := make([]storage.ID, len(items))
	for i := range items {
		ids[i] = items[i].ID
	}
	res := make([]storage.ReserveResult, len(items))
	err := s.batch(ctx, ids, func(i int, cur *storage.Record, now time.Time) (*storage.Record, *storage.Record, error) {
		o, w, a := storage.ApplyReserve(cur, items[i], now)
		res[i].Outcome = o
		return w, a, nil
	}, func(i int, rec *storage.Record, err error) {
		res[i].Record, res[i].Err = rec, err
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// BatchComplete implements storage.Store: one synced commit for the call.
func (s *Store) BatchComplete(ctx context.Context, items []storage.CompleteParams) ([]storage.CompleteResult, error) {
	ids := make([]storage.ID, len(items))
	for i := range items {
		ids[i] = items[i].ID
	}
	res := make([]storage.CompleteResult, len(items))
	err := s.batch(ctx, ids, func(i int, cur *storage.Record, now time.Time) (*storage.Record, *storage.Record, error) {
		return storage.ApplyComplete(cur, items[i], now)
	}, func(i int, rec *storage.Record, err error) {
		res[i].Record, res[i].Err = rec, err
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// syncSeen makes durable every write a scan may have seen, before its
// answer goes out. Pebble makes a batch readable before its sync ends, and
// List and Stats read without the stripe locks that keep Lookup from such
// writes; a synced write to the log after them syncs them too. A scan
// that found records syncs; so does one that found none while a Delete
// was unsynced, since that Delete may be why it found none.
func (s *Store) syncSeen() error {
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.LogData(syncMark, nil); err != nil {
		return s.writeErr(err)
	}
	if err := s.commit(b, pebbledb.Sync); err != nil {
		return s.writeErr(err)
	}
	return nil
}

// syncMark is what syncSeen logs; replay skips log-only records.
var syncMark = []byte("idem: synced a scan")

// List implements storage.Store as a range scan of the namespace.
func (s *Store) List(ctx context.Context, p storage.ListParams) ([]*storage.Record, bool, error) {
	if err := s.enter(ctx); err != nil {
		return nil, false, err
	}
	defer s.mu.RUnlock()
	recs, more, err := s.list(ctx, p)
	// deleting is read after the scan: a Delete it saw counts until synced.
	if err == nil && (len(recs) > 0 || s.deleting.Load() > 0) {
		err = s.syncSeen()
	}
	if err != nil {
		return nil, false, err
	}
	return recs, more, nil
}

func (s *Store) list(ctx context.Context, p storage.ListParams) ([]*storage.Record, bool, error) {
	base := namespacePrefix(p.Tenant, p.Namespace)
	lower := appendEscaped(slices.Clone(base), p.KeyPrefix)
	upper := successor(lower)
	if p.After != "" {
		// The first key after After is After's encoding plus one zero byte.
		after := append(appendString(slices.Clone(base), p.After), 0)
		if string(after) > string(lower) {
			lower = after
		}
	}
	it, err := s.db.NewIterWithContext(ctx, &pebbledb.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, false, s.readErr(err)
	}
	defer it.Close()
	now := s.now()
	var recs []*storage.Record
	for ok := it.First(); ok; ok = it.Next() {
		r, err := decodeRecord(it.Value())
		if err != nil {
			// Named, so that the operator can delete it.
			return nil, false, s.damaged(it.Key(), err)
		}
		if !r.Live(now) {
			continue
		}
		if len(recs) == p.Limit {
			return recs, true, nil
		}
		recs = append(recs, r)
		if err := ctx.Err(); err != nil {
			return nil, false, err
		}
	}
	if err := it.Error(); err != nil {
		return nil, false, s.readErr(err)
	}
	return recs, false, nil
}

// Stats implements storage.Store by scanning the tenant, or one namespace
// of it when namespace is set. It is an operator's call, not a hot path.
func (s *Store) Stats(ctx context.Context, tenant, namespace string) ([]storage.StatsRow, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	lower := tenantPrefix(tenant)
	if namespace != "" {
		lower = namespacePrefix(tenant, namespace)
	}
	it, err := s.db.NewIterWithContext(ctx, &pebbledb.IterOptions{LowerBound: lower, UpperBound: successor(lower)})
	if err != nil {
		return nil, s.readErr(err)
	}
	defer it.Close()
	type nsState struct {
		ns    string
		state storage.State
	}
	counts := map[nsState]int64{}
	now := s.now()
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		r, err := decodeRecord(it.Value())
		if err != nil {
			return nil, s.damaged(it.Key(), err)
		}
		if r.Live(now) {
			counts[nsState{r.Namespace, r.State}]++
		}
		if n++; n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
	}
	if err := it.Error(); err != nil {
		return nil, s.readErr(err)
	}
	if len(counts) > 0 || s.deleting.Load() > 0 {
		if err := s.syncSeen(); err != nil {
			return nil, err
		}
	}
	rows := make([]storage.StatsRow, 0, len(counts))
	for k, c := range counts {
		rows = append(rows, storage.StatsRow{Namespace: k.ns, State: k.state, Count: c})
	}
	storage.SortStats(rows)
	return rows, nil
}

// Ping implements storage.Store: the store is healthy while it is open and
// Pebble has not hit a background error that stops writes.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	if c := s.corruption.Load(); c != nil {
		return fmt.Errorf("%w: pebble store at %s is corrupt: %s", storage.ErrUnavailable, s.dir, *c)
	}
	if _, closer, err := s.db.Get(metaFormatKey); err != nil {
		return s.readErr(err)
	} else {
		closer.Close()
	}
	return nil
}

// goBackground runs f on its own goroutine, which Close waits for, unless
// Close has begun.
func (s *Store) goBackground(f func()) bool {
	s.bgMu.Lock()
	defer s.bgMu.Unlock()
	if s.stopCtx.Err() != nil {
		return false
	}
	s.background.Add(1)
	go func() {
		defer s.background.Done()
		f()
	}()
	return true
}

// Close stops the sweep, waits for running calls and closes Pebble. Closing
// twice is harmless.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.bgMu.Lock()
		s.stopCancel()
		s.bgMu.Unlock()
		s.background.Wait()
		s.mu.Lock()
		defer s.mu.Unlock()
		s.closed = true
		// No call runs now: the filters can go.
		s.retire(s.pres.live.Swap(nil), s.pres.next.Swap(nil))
		err := s.db.Close()
		if lerr := s.lock.Close(); err == nil {
			err = lerr
		}
		s.fsCloser.Close()
		if err != nil {
			s.closeErr = fmt.Errorf("idem: closing pebble store at %s: %w", s.dir, err)
		}
	})
	return s.closeErr
}
