package memory

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/internal/recordcodec"
)

func init() {
	storage.Register("memory", open)
}

// open serves URLs of the form memory://[?shards=N&sweep_interval=D].
func open(ctx context.Context, u *url.URL, o storage.OpenOptions) (storage.Store, error) {
	if u.Host != "" || (u.Path != "" && u.Path != "/") || u.Opaque != "" || u.User != nil {
		return nil, fmt.Errorf("idem: memory store URL takes no host or path, got %q", u.Redacted())
	}
	opts := []Option{WithClock(o.Clock), WithLogger(o.Logger)}
	for name, vals := range u.Query() {
		v := vals[len(vals)-1]
		switch name {
		case "shards":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > maxShards {
				return nil, fmt.Errorf("idem: memory store URL: shards=%q is not a number from 1 to 65536", v)
			}
			opts = append(opts, WithShards(n))
		case "sweep_interval":
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				return nil, fmt.Errorf("idem: memory store URL: sweep_interval=%q is not a duration of 0 (off) or more", v)
			}
			opts = append(opts, WithSweepInterval(d))
		default:
			return nil, fmt.Errorf("idem: memory store URL: unknown parameter %q (have shards, sweep_interval)", name)
		}
	}
	return New(opts...), nil
}

var _ storage.Store = (*Store)(nil)

const (
	defaultShards        = 256
	maxShards            = 1 << 16
	defaultSweepInterval = time.Minute
)

// Option configures a Store.
type Option func(*options)

type options struct {
	clock         clockwork.Clock
	logger        *slog.Logger
	shards        int
	sweepInterval time.Duration
	onSweep       func(deleted int)
}

// WithClock sets the clock records are timed by; nil keeps the real clock.
func WithClock(c clockwork.Clock) Option {
	return func(o *options) {
		if c != nil {
			o.clock = c
		}
	}
}

// WithLogger sets the logger; nil keeps slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// WithShards sets the number of shards (rounded up to a power of two, at
// least 1 and at most 65536). More shards mean less lock contention
// between keys.
func WithShards(n int) Option {
	return func(o *options) { o.shards = n }
}

// WithSweepInterval sets how often expired records are deleted; 0 or less
// turns the background sweep off (expired records stay absent to every
// operation, they just keep their memory until overwritten).
func WithSweepInterval(d time.Duration) Option {
	return func(o *options) { o.sweepInterval = d }
}

// A record is kept as bytes (recordcodec, without its ID) in its shard's
// pointer-free table and arena (table.go), under a key that encodes its ID.
type shard struct {
	mu sync.RWMutex
	t  table
	_  [64]byte // keeps neighbouring shards' locks off one cache line
}

// Store is the in-memory backend. Stored bytes are never modified in place:
// every change writes new ones, and callers get freshly decoded records.
type Store struct {
	clock  clockwork.Clock
	logger *slog.Logger
	seed   maphash.Seed
	mask   uint64
	shards []shard

	closed    atomic.Bool
	closeOnce sync.Once
	stop      chan struct{}
	done      chan struct{}
	onSweep   func(int)
}

// New returns an empty store and starts its expiry sweep.
func New(opts ...Option) *Store {
	o := options{clock: clockwork.NewRealClock(), logger: slog.Default(), shards: defaultShards, sweepInterval: defaultSweepInterval}
	for _, opt := range opts {
		opt(&o)
	}
	// Capped, so rounding up cannot overflow int.
	n := 1
	for n < min(o.shards, maxShards) {
		n <<= 1
	}
	s := &Store{
		clock:   o.clock,
		logger:  o.logger,
		seed:    maphash.MakeSeed(),
		mask:    uint64(n - 1),
		shards:  make([]shard, n),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		onSweep: o.onSweep,
	}
	if o.sweepInterval > 0 {
		go s.sweepLoop(o.sweepInterval)
	} else {
		close(s.done)
	}
	return s
}

// appendKey encodes id as a map key: tenant and namespace length-prefixed,
// then the key, so no choice of strings makes two IDs meet.
func appendKey(b []byte, id storage.ID) []byte {
	b = binary.AppendUvarint(b, uint64(len(id.Tenant)))
	b = append(b, id.Tenant...)
	b = binary.AppendUvarint(b, uint64(len(id.Namespace)))
	b = append(b, id.Namespace...)
	return append(b, id.Key...)
}

// parseKey is appendKey's inverse; the strings share k's memory.
func parseKey(k string) storage.ID {
	var id storage.ID
	n, w := binary.Uvarint([]byte(k))
	k = k[w:]
	id.Tenant, k = k[:n], k[n:]
	n, w = binary.Uvarint([]byte(k))
	k = k[w:]
	id.Namespace, id.Key = k[:n], k[n:]
	return id
}

// locate returns the shard of the encoded key k and k's table tag.
func (s *Store) locate(k []byte) (*shard, uint64) {
	h := maphash.Bytes(s.seed, k)
	return &s.shards[(h>>1)&s.mask], tagOf(h)
}

// now is the store's time, wall clock only, so records compare like the
// timestamps of the other backends.
func (s *Store) now() time.Time { return s.clock.Now().Round(0) }

func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return storage.ErrClosed
	}
	return ctx.Err()
}

// live decodes the record in slot i of t if it exists at now; nil
// otherwise.
func live(t *table, i int, found bool, id storage.ID, now time.Time) *storage.Record {
	if !found || t.slots[i].expires <= now.UnixNano() {
		return nil
	}
	_, v := t.entry(t.slots[i].ref)
	return decode(v, id)
}

// decode returns the record v holds; Decode copies, so the record does not
// share the arena's bytes.
func decode(v []byte, id storage.ID) *storage.Record {
	r, err := recordcodec.Decode(v, &id)
	if err != nil {
		panic(fmt.Sprintf("idem: memory store: record %q/%q/%q does not decode: %v", id.Tenant, id.Namespace, id.Key, err))
	}
	return r
}

// update runs f on the live record of id (nil if none) under its shard
// lock and stores what f returns to write. Records handed to f are fresh
// copies, so f's answers go to callers without another copy. Once the
// store is closed it refuses: a write into a shard that Close has already
// emptied would map memory that nothing returns.
func (s *Store) update(id storage.ID, f func(cur *storage.Record, now time.Time) (write *storage.Record)) error {
	var kbuf [128]byte
	k := appendKey(kbuf[:0], id)
	sh, tag := s.locate(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if s.closed.Load() {
		return storage.ErrClosed
	}
	now := s.now()
	i, found := sh.t.find(tag, k)
	if w := f(live(&sh.t, i, found, id, now), now); w != nil {
		var vbuf [256]byte
		sh.t.set(i, found, tag, k, recordcodec.Append(vbuf[:0], w, false), recordcodec.UnixNano(w.ExpiresAt))
	}
	return nil
}

func (s *Store) reserve(p storage.ReserveParams) (out storage.Outcome, ans *storage.Record, err error) {
	if e := s.update(p.ID, func(cur *storage.Record, now time.Time) *storage.Record {
		var w *storage.Record
		out, w, ans = storage.ApplyReserve(cur, p, now)
		return w
	}); e != nil {
		return 0, nil, e
	}
	return out, ans, nil
}

func (s *Store) complete(p storage.CompleteParams) (ans *storage.Record, err error) {
	if e := s.update(p.ID, func(cur *storage.Record, now time.Time) *storage.Record {
		var w *storage.Record
		w, ans, err = storage.ApplyComplete(cur, p, now)
		return w
	}); e != nil {
		return nil, e
	}
	return ans, err
}

// Reserve implements storage.Store.
func (s *Store) Reserve(ctx context.Context, p storage.ReserveParams) (storage.Outcome, *storage.Record, error) {
	if err := s.check(ctx); err != nil {
		return 0, nil, err
	}
	return s.reserve(p)
}

// Complete implements storage.Store.
func (s *Store) Complete(ctx context.Context, p storage.CompleteParams) (*storage.Record, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	return s.complete(p)
}

// Release implements storage.Store.
func (s *Store) Release(ctx context.Context, id storage.ID, token uint64) (ans *storage.Record, err error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if e := s.update(id, func(cur *storage.Record, now time.Time) *storage.Record {
		var w *storage.Record
		w, ans, err = storage.ApplyRelease(cur, token, now)
		return w
	}); e != nil {
		return nil, e
	}
	return ans, err
}

// ExtendLease implements storage.Store.
func (s *Store) ExtendLease(ctx context.Context, id storage.ID, token uint64, ttl time.Duration) (ans *storage.Record, err error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if e := s.update(id, func(cur *storage.Record, now time.Time) *storage.Record {
		ans, err = storage.ApplyExtendLease(cur, token, ttl, now)
		return ans
	}); e != nil {
		return nil, e
	}
	return ans, err
}

// Checkpoint implements storage.Store.
func (s *Store) Checkpoint(ctx context.Context, id storage.ID, token uint64, cp storage.Checkpoint) (ans *storage.Record, err error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if e := s.update(id, func(cur *storage.Record, now time.Time) *storage.Record {
		ans, err = storage.ApplyCheckpoint(cur, token, cp, now)
		return ans
	}); e != nil {
		return nil, e
	}
	return ans, err
}

// Lookup implements storage.Store.
func (s *Store) Lookup(ctx context.Context, id storage.ID) (*storage.Record, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	var buf [128]byte
	k := appendKey(buf[:0], id)
	sh, tag := s.locate(k)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	// Again under the lock: Close may have emptied the shard since check,
	// and an empty shard would answer ErrNotFound for a stored record.
	if s.closed.Load() {
		return nil, storage.ErrClosed
	}
	i, found := sh.t.find(tag, k)
	if r := live(&sh.t, i, found, id, s.now()); r != nil {
		return r, nil
	}
	return nil, storage.ErrNotFound
}

// BatchReserve implements storage.Store. Items are applied one after the
// other, each atomically; a batch is not a transaction.
func (s *Store) BatchReserve(ctx context.Context, items []storage.ReserveParams) ([]storage.ReserveResult, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	res := make([]storage.ReserveResult, len(items))
	for i, p := range items {
		var err error
		if res[i].Outcome, res[i].Record, err = s.reserve(p); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// BatchComplete implements storage.Store.
func (s *Store) BatchComplete(ctx context.Context, items []storage.CompleteParams) ([]storage.CompleteResult, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	res := make([]storage.CompleteResult, len(items))
	for i, p := range items {
		// complete answers ErrClosed only when Close ran since check:
		// the batch fails as a whole, as BatchReserve's does.
		if res[i].Record, res[i].Err = s.complete(p); errors.Is(res[i].Err, storage.ErrClosed) {
			return nil, res[i].Err
		}
	}
	return res, nil
}

// Delete implements storage.Store.
func (s *Store) Delete(ctx context.Context, id storage.ID) (*storage.Record, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	var buf [128]byte
	k := appendKey(buf[:0], id)
	sh, tag := s.locate(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if s.closed.Load() {
		return nil, storage.ErrClosed
	}
	i, found := sh.t.find(tag, k)
	if !found {
		return nil, storage.ErrNotFound
	}
	r := live(&sh.t, i, found, id, s.now())
	sh.t.deleteAt(i)
	if r != nil {
		return r, nil
	}
	return nil, storage.ErrNotFound
}

// ForceRelease implements storage.Store.
func (s *Store) ForceRelease(ctx context.Context, id storage.ID) (ans *storage.Record, err error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if e := s.update(id, func(cur *storage.Record, now time.Time) *storage.Record {
		var w *storage.Record
		w, ans, err = storage.ApplyForceRelease(cur, now)
		return w
	}); e != nil {
		return nil, e
	}
	return ans, err
}

// List implements storage.Store. It sorts the matching keys and copies
// only the page's records: copying every match would make paging through
// a namespace copy it over and over.
func (s *Store) List(ctx context.Context, p storage.ListParams) ([]*storage.Record, bool, error) {
	if err := s.check(ctx); err != nil {
		return nil, false, err
	}
	var ids []storage.ID
	now := s.now()
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		if s.closed.Load() {
			sh.mu.RUnlock()
			return nil, false, storage.ErrClosed
		}
		for _, sl := range sh.t.slots {
			if sl.tag == 0 || sl.expires <= now.UnixNano() {
				continue
			}
			k, _ := sh.t.entry(sl.ref)
			id := parseKey(string(k)) // string copies: the arena may be reused once unlocked
			if id.Tenant == p.Tenant && id.Namespace == p.Namespace && id.Key > p.After && strings.HasPrefix(id.Key, p.KeyPrefix) {
				ids = append(ids, id)
			}
		}
		sh.mu.RUnlock()
	}
	slices.SortFunc(ids, func(a, b storage.ID) int { return cmp.Compare(a.Key, b.Key) })
	// Read in key order until the page and one more are found; a record
	// deleted or expired since the scan is passed over.
	recs := make([]*storage.Record, 0, min(len(ids), p.Limit))
	for _, id := range ids {
		r, err := s.Lookup(ctx, id)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, false, err
		}
		if len(recs) == p.Limit {
			return recs, true, nil
		}
		recs = append(recs, r)
	}
	return recs, false, nil
}

// Stats implements storage.Store.
func (s *Store) Stats(ctx context.Context, tenant, namespace string) ([]storage.StatsRow, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	type group struct {
		ns    string
		state storage.State
	}
	counts := map[group]int64{}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		if s.closed.Load() {
			sh.mu.RUnlock()
			return nil, storage.ErrClosed
		}
		now := s.now()
		for i, sl := range sh.t.slots {
			if sl.tag == 0 {
				continue
			}
			k, _ := sh.t.entry(sl.ref)
			id := parseKey(string(k))
			if id.Tenant == tenant && (namespace == "" || id.Namespace == namespace) {
				if r := live(&sh.t, i, true, id, now); r != nil {
					counts[group{id.Namespace, r.State}]++
				}
			}
		}
		sh.mu.RUnlock()
	}
	var rows []storage.StatsRow
	for g, n := range counts {
		rows = append(rows, storage.StatsRow{Namespace: g.ns, State: g.state, Count: n})
	}
	storage.SortStats(rows)
	return rows, nil
}

// Ping implements storage.Store.
func (s *Store) Ping(ctx context.Context) error { return s.check(ctx) }

// Close stops the sweep and makes later calls fail with storage.ErrClosed.
// The records are dropped. Closing twice is harmless.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.stop)
		<-s.done
		for i := range s.shards {
			sh := &s.shards[i]
			sh.mu.Lock()
			sh.t.reset()
			sh.mu.Unlock()
		}
	})
	return nil
}

// Sweep deletes every expired record now, one shard at a time, and returns
// how many it deleted. The background sweep calls it on every tick.
func (s *Store) Sweep() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		now := s.now().UnixNano()
		// deleteAt may shift a later slot into i, so i is looked at again.
		for i := 0; i < len(sh.t.slots); {
			if sl := sh.t.slots[i]; sl.tag != 0 && sl.expires <= now {
				sh.t.deleteAt(i)
				n++
				continue
			}
			i++
		}
		sh.t.shrink()
		sh.mu.Unlock()
	}
	return n
}

func (s *Store) sweepLoop(interval time.Duration) {
	defer close(s.done)
	t := s.clock.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.Chan():
			n := s.Sweep()
			if n > 0 {
				s.logger.Debug("idem: memory store swept expired records", "deleted", n)
			}
			if s.onSweep != nil {
				s.onSweep(n)
			}
		}
	}
}
