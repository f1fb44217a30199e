package redis

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/idemhq/idem/internal/keyhash"
	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/internal/coalesce"
)

var _ storage.Store = (*Store)(nil)

func init() {
	storage.Register("redis", open)
	storage.Register("rediss", open)
}

// Options tune a Store. The zero value is not useful; start from
// DefaultOptions.
type Options struct {
	// KeyPrefix starts every key the store writes, so several idem
	// deployments (or test runs) can share one Redis. It may not contain
	// '{' or '}', which would break the tenant's hash tag.
	KeyPrefix string
	// WaitReplicas, when ≥ 0, makes every write wait for that many replicas
	// to acknowledge it (Redis WAIT, sent on the same connection in the same
	// round trip). A write that does not reach them in WaitTimeout fails
	// with storage.ErrUnavailable. -1 disables WAIT. Needs a single-node
	// client (*goredis.Client): WAIT covers the writes of its connection.
	WaitReplicas int
	// WaitTimeout bounds each WAIT.
	WaitTimeout time.Duration
	// Coalesce is how many pipelines of concurrent single-record calls may
	// be in flight at once; calls beyond them wait and share the next
	// pipeline. 0 sends each call on its own.
	Coalesce int
	// Logger receives the store's warnings; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultOptions returns the options a bare redis:// URL gets.
func DefaultOptions() Options {
	return Options{KeyPrefix: "idem", WaitReplicas: -1, WaitTimeout: time.Second, Coalesce: 2}
}

// Store is the Redis backend. Its methods are safe for concurrent use.
type Store struct {
	c    goredis.UniversalClient
	opts Options
	// offset shifts the script's clock, in µs; only the conformance
	// harness sets it, to move time without sleeping.
	offset func() int64
	closed atomic.Bool
	// calls coalesces concurrent single-record calls into pipelines (nil:
	// each call on its own).
	calls *coalesce.Coalescer[*call, error]
}

// open is the storage.Opener of redis:// and rediss:// URLs. Besides
// go-redis's own query options (pool_size, dial_timeout, read_timeout,
// max_retries, …) it reads key_prefix, wait_replicas and wait_timeout.
func open(ctx context.Context, u *url.URL, oo storage.OpenOptions) (storage.Store, error) {
	o := DefaultOptions()
	o.Logger = oo.Logger
	q := u.Query()
	if v := q.Get("key_prefix"); q.Has("key_prefix") {
		o.KeyPrefix = v
	}
	if q.Has("wait_replicas") {
		n, err := strconv.Atoi(q.Get("wait_replicas"))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("idem: redis store URL: wait_replicas must be a non-negative integer, got %q", q.Get("wait_replicas"))
		}
		o.WaitReplicas = n
	}
	if q.Has("wait_timeout") {
		d, err := time.ParseDuration(q.Get("wait_timeout"))
		if err != nil || d < time.Millisecond {
			return nil, fmt.Errorf("idem: redis store URL: wait_timeout must be a duration of at least 1ms, got %q", q.Get("wait_timeout"))
		}
		o.WaitTimeout = d
	}
	if q.Has("coalesce") {
		n, err := strconv.Atoi(q.Get("coalesce"))
		if err != nil || n < 0 || n > 1000 {
			return nil, fmt.Errorf("idem: redis store URL: coalesce must be a count from 0 (off) to 1000, got %q", q.Get("coalesce"))
		}
		o.Coalesce = n
	}
	if q.Has("db") && strings.Trim(u.Path, "/") != "" {
		// go-redis would let db= override the path's database.
		return nil, errors.New("idem: redis store URL names its database twice, in the path and as db=; keep one")
	}
	retries := q.Has("max_retries")
	q.Del("coalesce")
	q.Del("key_prefix")
	q.Del("wait_replicas")
	q.Del("wait_timeout")
	ru := *u
	ru.RawQuery = q.Encode()
	ro, err := goredis.ParseURL(ru.String())
	if err != nil {
		return nil, fmt.Errorf("idem: redis store URL: %v", err)
	}
	if !retries {
		// A retried EVALSHA whose first reply was lost would answer a
		// caller's own Reserve with IN_PROGRESS; callers retry instead,
		// through the idempotency rules.
		ro.MaxRetries = -1
	}
	// The caller's deadline bounds each call, not only read_timeout.
	ro.ContextTimeoutEnabled = true
	// WAIT blocks up to wait_timeout on the connection; the read deadline
	// must outlast it or a slow replica would look like a dead Redis.
	if o.WaitReplicas >= 0 {
		rt := ro.ReadTimeout
		if rt == 0 {
			rt = 3 * time.Second
		}
		if rt > 0 && rt < o.WaitTimeout+time.Second {
			ro.ReadTimeout = o.WaitTimeout + time.Second
		}
	}
	c := goredis.NewClient(ro)
	s, err := New(ctx, c, o)
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("%w (redis at %s)", err, ro.Addr)
	}
	return s, nil
}

// New returns a Store over c, which it owns from then on (Close closes it).
// It checks that Redis answers and loads the scripts.
func New(ctx context.Context, c goredis.UniversalClient, o Options) (*Store, error) {
	if o.KeyPrefix == "" || strings.ContainsAny(o.KeyPrefix, "{}") {
		return nil, fmt.Errorf("idem: redis key prefix %q must be non-empty and free of '{' and '}'", o.KeyPrefix)
	}
	// WAIT takes whole milliseconds and reads 0 as "block until the
	// replicas answer".
	if o.WaitReplicas >= 0 && o.WaitTimeout < time.Millisecond {
		return nil, errors.New("idem: redis wait timeout must be at least 1ms when waiting for replicas")
	}
	if _, single := c.(*goredis.Client); o.WaitReplicas >= 0 && !single {
		return nil, errors.New("idem: redis wait_replicas needs a single-node client, not a cluster or ring")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	// go-redis prints its own notices (a dropped pool connection) as plain
	// text on stderr, between idemd's JSON lines. idem reports store
	// trouble itself, so they are debug lines. Its logger is one per
	// process, so the last store opened names it.
	goredis.SetLogger(redisLog{o.Logger})
	s := &Store{c: c, opts: o}
	if o.Coalesce > 0 {
		s.calls = &coalesce.Coalescer[*call, error]{Slots: o.Coalesce, Max: coalesceMax, Run: s.runCalls}
	}
	for _, sc := range allScripts {
		if err := sc.Load(ctx, c).Err(); err != nil {
			return nil, s.mapErr(ctx, err)
		}
	}
	s.checkEviction(ctx)
	return s, nil
}

// coalesceMax bounds a coalesced pipeline.
const coalesceMax = 256

// runCalls runs a coalesced batch as one pipeline; it is a write when any
// call is (WAIT then covers them all).
func (s *Store) runCalls(ctx context.Context, calls []*call) []error {
	write := false
	for _, c := range calls {
		write = write || c.write
	}
	err := s.exec(ctx, write, calls...)
	errs := make([]error, len(calls))
	for i := range errs {
		errs[i] = err
	}
	return errs
}

// checkEviction warns when Redis may evict keys under memory pressure:
// every idem key has a TTL, so volatile-* policies evict records too, and
// an evicted record lets a retried command run twice. Managed Redis often
// forbids CONFIG; then nothing is said.
func (s *Store) checkEviction(ctx context.Context) {
	cfg, err := s.c.ConfigGet(ctx, "maxmemory-policy").Result()
	if err != nil {
		return
	}
	if p := cfg["maxmemory-policy"]; p != "" && p != "noeviction" {
		s.opts.Logger.Warn("idem: redis maxmemory-policy evicts keys; set it to noeviction, or records may vanish before they expire", "policy", p)
	}
}

// Key layout: a record is one string under the tenant's hash tag
// {t<hex tenant>}, so that one tenant's records share a cluster slot. Hex
// keeps '{', '}' and ':' of a tenant out of the tag; the 't' keeps the tag
// non-empty for the empty tenant (an empty tag would hash the whole key).
// The namespace is length-prefixed and the key comes last, so no two
// (namespace, key) pairs share a name:
//
//	P:{tHEX}:s:LEN:NS:KEY
//
// Records were hashes under "r:" before the single-string layout, with
// index keys "i:", "x:" and "n" beside them before List and Stats used
// SCAN; the index keys are no longer written and expire on their own TTL.
func (s *Store) tenantPrefix(tenant string) string {
	return s.opts.KeyPrefix + ":{t" + hex.EncodeToString([]byte(tenant)) + "}:s:"
}

// nsPrefix is what every record key of a namespace starts with.
func (s *Store) nsPrefix(tenant, ns string) string {
	return s.tenantPrefix(tenant) + strconv.Itoa(len(ns)) + ":" + ns + ":"
}

// call is one script invocation; exec fills res and err.
type call struct {
	sc     *goredis.Script
	keys   []string
	args   []any
	write  bool   // for coalescing: the pipeline needs WAIT
	tenant string // of the record
	res    any
	err    error
}

// recordCall is a call of a per-record script.
func (s *Store) recordCall(sc *goredis.Script, id storage.ID, extra ...any) *call {
	return &call{
		sc:     sc,
		keys:   []string{s.nsPrefix(id.Tenant, id.Namespace) + id.Key},
		args:   append([]any{s.now()}, extra...),
		tenant: id.Tenant,
	}
}

// many reports whether c's script takes many records of one tenant
// (Reserve, Complete), so exec runs it with the others of its kind.
func (c *call) many() bool { return c.sc == reserveScript || c.sc == completeScript }

// merged is one script call standing for several many-record calls.
type merged struct {
	c     *call
	parts []*call
}

// merge folds the many-record calls among calls into one call per script
// and tenant (at most coalesceMax records each), in order, and leaves the
// others as they are. It returns what to send and the merged calls, whose
// replies unmerge hands back to their parts.
func merge(calls []*call) ([]*call, []merged) {
	type group struct {
		sc     *goredis.Script
		tenant string
	}
	var (
		send []*call
		ms   []merged
		open map[group]int
	)
	for _, c := range calls {
		if !c.many() {
			send = append(send, c)
			continue
		}
		if open == nil {
			open = map[group]int{}
		}
		g := group{c.sc, c.tenant}
		i, ok := open[g]
		if !ok || len(ms[i].parts) == coalesceMax {
			m := &call{sc: c.sc, args: []any{c.args[0]}}
			send = append(send, m)
			ms = append(ms, merged{c: m})
			i = len(ms) - 1
			open[g] = i
		}
		m := &ms[i]
		m.c.keys = append(m.c.keys, c.keys[0])
		m.c.args = append(m.c.args, c.args[1:]...)
		m.c.write = m.c.write || c.write
		m.parts = append(m.parts, c)
	}
	return send, ms
}

// unmerge gives each part its own reply out of its merged call's list.
func unmerge(ms []merged) {
	for _, m := range ms {
		rows, ok := m.c.res.([]any)
		for i, p := range m.parts {
			switch {
			case m.c.err != nil:
				p.err = m.c.err
			case !ok || len(rows) != len(m.parts):
				p.err = errCorrupt
			default:
				p.res = rows[i]
			}
		}
	}
}

// now is the clock offset the scripts add to Redis TIME.
func (s *Store) now() int64 {
	if s.offset != nil {
		return s.offset()
	}
	return 0
}

// exec runs the calls in one pipeline (one round trip), followed by WAIT
// when the calls write and the store waits for replicas; the Reserves and
// the Completes of one tenant among them go as one script call each. The
// returned error is for the whole pipeline.
func (s *Store) exec(ctx context.Context, write bool, calls ...*call) error {
	send, ms := merge(calls)
	if err := s.send(ctx, write, send...); err != nil {
		return err
	}
	unmerge(ms)
	return nil
}

// send runs the calls in one pipeline (one round trip), followed by WAIT
// when the calls write and the store waits for replicas. A call that met
// NOSCRIPT (Redis restarted or SCRIPT FLUSH) did not run; its script is
// loaded again and the call re-sent once. The returned error is for the
// whole pipeline (connection lost before the first reply, or with WAIT in
// it; WAIT not satisfied); per-call errors, the lost replies' included,
// are in each call.
func (s *Store) send(ctx context.Context, write bool, calls ...*call) error {
	if s.closed.Load() {
		return storage.ErrClosed
	}
	if len(calls) == 1 && (!write || s.opts.WaitReplicas < 0) {
		return s.execOne(ctx, calls[0])
	}
	pending := calls
	for attempt := 0; ; attempt++ {
		pipe := s.c.Pipeline()
		cmds := make([]*goredis.Cmd, len(pending))
		for i, c := range pending {
			cmds[i] = pipe.EvalSha(ctx, c.sc.Hash(), c.keys, c.args...)
		}
		var wait *goredis.Cmd
		if write && s.opts.WaitReplicas >= 0 {
			wait = pipe.Do(ctx, "wait", s.opts.WaitReplicas, s.opts.WaitTimeout.Milliseconds())
		}
		// go-redis stamps a connection failure on every call of the
		// pipeline, those it had read the replies of too, except calls
		// answered with a Redis error.
		_, perr := pipe.Exec(ctx)
		lost := perr != nil && !isRedisError(perr)
		if lost && (wait != nil || !answered(cmds[0])) {
			return s.mapErr(ctx, perr)
		}
		var again []*call
		for i, cmd := range cmds {
			err := cmd.Err()
			if lost {
				// A script has written by the time Redis answers it, so a
				// call answered before the failure stands; the others may
				// or may not have run. (Under WAIT none is confirmed.)
				if !answered(cmd) {
					pending[i].res, pending[i].err = nil, s.mapErr(ctx, perr)
					continue
				}
				if cmd.Val() != nil {
					err = nil // go-redis stamped the failure on it
				}
			}
			if err != nil && !isRedisError(err) {
				return s.mapErr(ctx, err)
			}
			if goredis.HasErrorPrefix(err, "NOSCRIPT") && attempt == 0 {
				again = append(again, pending[i])
				continue
			}
			pending[i].res, pending[i].err = cmd.Val(), s.mapErr(ctx, err)
		}
		if wait != nil {
			werr := wait.Err()
			if werr != nil {
				werr = s.mapErr(ctx, werr)
			} else if got, err := wait.Int64(); err != nil || got < int64(s.opts.WaitReplicas) {
				werr = fmt.Errorf("%w: redis WAIT: %d of %d replicas acknowledged the write within %v", storage.ErrUnavailable, got, s.opts.WaitReplicas, s.opts.WaitTimeout)
			}
			// An unsatisfied WAIT fails the writes it was for, not the
			// reads that shared their pipeline; a pipeline of calls not
			// marked (not coalesced) is all writes.
			if werr != nil && !failWrites(pending, again, werr) {
				return werr
			}
		}
		if len(again) == 0 {
			return nil
		}
		loaded := map[*goredis.Script]bool{}
		for _, c := range again {
			if !loaded[c.sc] {
				if err := c.sc.Load(ctx, s.c).Err(); err != nil {
					return s.mapErr(ctx, err)
				}
				loaded[c.sc] = true
			}
		}
		pending = again
	}
}

// answered reports whether cmd's reply arrived: a value, or a Redis error
// reply (go-redis stamps a connection failure only on calls without one).
func answered(cmd *goredis.Cmd) bool { return cmd.Val() != nil || isRedisError(cmd.Err()) }

// failWrites sets err on the calls of pending that write, except those in
// again (they did not run, and are sent again with a WAIT of their own),
// and reports whether any call was marked as a write.
func failWrites(pending, again []*call, err error) bool {
	marked := false
	for _, c := range pending {
		if c.write && !slices.Contains(again, c) {
			c.err = err
			marked = true
		}
	}
	return marked
}

// execOne runs one call without a pipeline, the common case.
func (s *Store) execOne(ctx context.Context, c *call) error {
	cmd := s.c.EvalSha(ctx, c.sc.Hash(), c.keys, c.args...)
	if goredis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
		if err := c.sc.Load(ctx, s.c).Err(); err != nil {
			return s.mapErr(ctx, err)
		}
		cmd = s.c.EvalSha(ctx, c.sc.Hash(), c.keys, c.args...)
	}
	if err := cmd.Err(); err != nil && !isRedisError(err) {
		return s.mapErr(ctx, err)
	}
	c.res, c.err = cmd.Val(), s.mapErr(ctx, cmd.Err())
	return nil
}

// record runs a single-record script on id's record. Those scripts raise
// damagedMark for a record they cannot read.
func (s *Store) record(ctx context.Context, write bool, sc *goredis.Script, id storage.ID, extra ...any) (any, error) {
	res, err := s.one(ctx, write, s.recordCall(sc, id, extra...))
	if err != nil && strings.Contains(err.Error(), damagedMark) {
		return nil, storage.Damaged(id, err)
	}
	return res, err
}

// one runs a single call and returns its reply. Concurrent calls share
// pipelines: while one is in flight, calls queue and go together in the
// next, in arrival order (Redis runs a pipeline's scripts one after the
// other, so two calls for one record still see each other in that order).
func (s *Store) one(ctx context.Context, write bool, c *call) (any, error) {
	if s.calls != nil {
		c.write = write
		err, cerr := s.calls.Do(ctx, c)
		if cerr != nil {
			return nil, cerr
		}
		if err != nil {
			return nil, err
		}
		return c.res, c.err
	}
	if err := s.exec(ctx, write, c); err != nil {
		return nil, err
	}
	return c.res, c.err
}

func isRedisError(err error) bool {
	var re goredis.Error
	return errors.As(err, &re) && !errors.Is(err, goredis.ErrClosed)
}

// mapErr turns go-redis errors into storage sentinels: the caller's context
// ending stays a context error, a closed client is ErrClosed, anything that
// says "Redis cannot serve now" is ErrUnavailable.
func (s *Store) mapErr(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, goredis.ErrClosed) || s.closed.Load() {
		return storage.ErrClosed
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if isRedisError(err) {
		return redisErr(err.Error())
	}
	// Dial failures, resets, timeouts, pool exhaustion.
	return fmt.Errorf("%w: redis: %v", storage.ErrUnavailable, err)
}

// redisErr is the error for a Redis error reply: ErrUnavailable for those
// that say Redis cannot serve now, a plain error for the rest.
func redisErr(msg string) error {
	m := strings.TrimPrefix(msg, "ERR ") // as go-redis's HasErrorPrefix
	for _, p := range []string{"LOADING", "READONLY", "OOM", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY", "NOREPLICAS", "MOVED", "ASK"} {
		if strings.HasPrefix(m, p) {
			return fmt.Errorf("%w: redis: %s", storage.ErrUnavailable, msg)
		}
	}
	return fmt.Errorf("idem: redis: %s", msg)
}

// codeFailed is a per-record reply's code for a record its script could
// not handle.
const codeFailed = -1

func micros(d time.Duration) int64 { return d.Microseconds() }

// Reserve implements storage.Store.
func (s *Store) Reserve(ctx context.Context, p storage.ReserveParams) (storage.Outcome, *storage.Record, error) {
	res, err := s.one(ctx, true, s.reserveCall(p))
	if err != nil {
		return 0, nil, err
	}
	return parseReserve(p.ID, res)
}

func (s *Store) reserveCall(p storage.ReserveParams) *call {
	return s.recordCall(reserveScript, p.ID, string(p.Fingerprint), micros(p.LeaseTTL), micros(max(p.Retention, p.LeaseTTL)))
}

func parseReserve(id storage.ID, res any) (storage.Outcome, *storage.Record, error) {
	code, _, rec, err := parseReply(id, res)
	if err != nil {
		return 0, nil, err
	}
	if code < 1 || code > 4 || rec == nil {
		return 0, nil, fmt.Errorf("idem: redis: unexpected reserve reply code %d", code)
	}
	return storage.Outcome(code), rec, nil
}

// Complete implements storage.Store.
func (s *Store) Complete(ctx context.Context, p storage.CompleteParams) (*storage.Record, error) {
	res, err := s.one(ctx, true, s.completeCall(p))
	if err != nil {
		return nil, err
	}
	return recordOrErr(p.ID, p.Token, res)
}

func (s *Store) completeCall(p storage.CompleteParams) *call {
	return s.recordCall(completeScript, p.ID, p.Token, encodeResult(p.Result), micros(p.Retention))
}

// Release implements storage.Store.
func (s *Store) Release(ctx context.Context, id storage.ID, token uint64) (*storage.Record, error) {
	res, err := s.record(ctx, true, releaseScript, id, token)
	if err != nil {
		return nil, err
	}
	return recordOrErr(id, token, res)
}

// ExtendLease implements storage.Store.
func (s *Store) ExtendLease(ctx context.Context, id storage.ID, token uint64, ttl time.Duration) (*storage.Record, error) {
	res, err := s.record(ctx, true, extendScript, id, token, micros(ttl))
	if err != nil {
		return nil, err
	}
	return recordOrErr(id, token, res)
}

// Checkpoint implements storage.Store.
func (s *Store) Checkpoint(ctx context.Context, id storage.ID, token uint64, cp storage.Checkpoint) (*storage.Record, error) {
	res, err := s.record(ctx, true, checkpointScript, id, token, encodeCheckpoint(cp))
	if err != nil {
		return nil, err
	}
	return recordOrErr(id, token, res)
}

// Lookup implements storage.Store.
func (s *Store) Lookup(ctx context.Context, id storage.ID) (*storage.Record, error) {
	res, err := s.record(ctx, false, lookupScript, id)
	if err != nil {
		return nil, err
	}
	return recordOrErr(id, 0, res)
}

// BatchReserve implements storage.Store: one round trip, one script call
// for each run of up to coalesceMax items (all of one tenant, so of one
// cluster slot), which bounds how long one call holds Redis's single
// thread. Each item is atomic on its own, as with single calls.
func (s *Store) BatchReserve(ctx context.Context, items []storage.ReserveParams) ([]storage.ReserveResult, error) {
	calls := make([]*call, len(items))
	for i, p := range items {
		calls[i] = s.reserveCall(p)
	}
	if err := s.exec(ctx, true, calls...); err != nil {
		return nil, err
	}
	out := make([]storage.ReserveResult, len(items))
	for i, c := range calls {
		if c.err != nil {
			out[i].Err = c.err
			continue
		}
		out[i].Outcome, out[i].Record, out[i].Err = parseReserve(items[i].ID, c.res)
	}
	return out, nil
}

// BatchComplete implements storage.Store, pipelined like BatchReserve.
func (s *Store) BatchComplete(ctx context.Context, items []storage.CompleteParams) ([]storage.CompleteResult, error) {
	calls := make([]*call, len(items))
	for i, p := range items {
		calls[i] = s.completeCall(p)
	}
	if err := s.exec(ctx, true, calls...); err != nil {
		return nil, err
	}
	out := make([]storage.CompleteResult, len(items))
	for i, c := range calls {
		if c.err != nil {
			out[i].Err = c.err
			continue
		}
		out[i].Record, out[i].Err = recordOrErr(items[i].ID, items[i].Token, c.res)
	}
	return out, nil
}

// Delete implements storage.Store.
func (s *Store) Delete(ctx context.Context, id storage.ID) (*storage.Record, error) {
	res, err := s.record(ctx, true, deleteScript, id)
	if err != nil {
		return nil, err
	}
	// A record that could not be read is removed all the same, and
	// answered without it.
	if code, detail, _, err := parseReply(id, res); errors.Is(err, errCorrupt) || (err == nil && code == codeOK && detail == "damaged") {
		return nil, nil
	}
	return recordOrErr(id, 0, res)
}

// ForceRelease implements storage.Store.
func (s *Store) ForceRelease(ctx context.Context, id storage.ID) (*storage.Record, error) {
	res, err := s.record(ctx, true, forceReleaseScript, id)
	if err != nil {
		return nil, err
	}
	return recordOrErr(id, 0, res)
}

// scanCount is SCAN's COUNT hint, and the most records one liveScript
// call reads, so no single command holds Redis for long.
const scanCount = 1000

// scanKeys walks, with SCAN, every key that starts with prefix (a tenant's,
// or a namespace's, records) on the node that holds them, calling fn with
// each batch of names. O(keys in that node) however few match: List and
// Stats are for operators, and the write path carries no index for them.
func (s *Store) scanKeys(ctx context.Context, prefix string, fn func(keys []string) error) error {
	if s.closed.Load() {
		return storage.ErrClosed
	}
	node := goredis.Cmdable(s.c)
	if cc, ok := s.c.(*goredis.ClusterClient); ok {
		c, err := cc.MasterForKey(ctx, prefix)
		if err != nil {
			return s.mapErr(ctx, err)
		}
		node = c
	}
	match := globEscape(prefix) + "*"
	var cursor uint64
	// SCAN may name a key more than once, in one reply or across replies;
	// fn sees each once.
	seen := map[string]struct{}{}
	for {
		keys, next, err := node.Scan(ctx, cursor, match, scanCount).Result()
		if err != nil {
			return s.mapErr(ctx, err)
		}
		keys = slices.DeleteFunc(keys, func(k string) bool {
			_, dup := seen[k]
			seen[k] = struct{}{}
			return dup
		})
		if len(keys) > 0 {
			if err := fn(keys); err != nil {
				return err
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// globEscape quotes the characters SCAN's MATCH treats as wildcards.
func globEscape(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		switch c {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	return b.String()
}

// live reads the records of keys (one tenant's) that exist at Redis's now,
// in chunks of scanCount, and calls fn with each key and its record value.
func (s *Store) live(ctx context.Context, keys []string, fn func(key, val string) error) error {
	for len(keys) > 0 {
		chunk := keys[:min(len(keys), scanCount)]
		keys = keys[len(chunk):]
		res, err := s.one(ctx, false, &call{sc: liveScript, keys: chunk, args: []any{s.now()}})
		if err != nil {
			return err
		}
		rows, ok := res.([]any)
		if !ok || len(rows)%2 != 0 {
			return errCorrupt
		}
		for i := 0; i < len(rows); i += 2 {
			n, _ := rows[i].(int64)
			v, _ := rows[i+1].(string)
			if n < 0 && int(-n) <= len(chunk) {
				return s.damagedAt(chunk[-n-1], errCorrupt)
			}
			if n < 1 || int(n) > len(chunk) {
				return errCorrupt
			}
			if err := fn(chunk[n-1], v); err != nil {
				return err
			}
		}
	}
	return nil
}

// List implements storage.Store: SCAN for the namespace's keys after
// p.After with p.KeyPrefix, sorted, then the live records among them in
// key order until the page is full.
func (s *Store) List(ctx context.Context, p storage.ListParams) ([]*storage.Record, bool, error) {
	limit := p.Limit
	if limit <= 0 {
		limit = 1000
	}
	base := s.nsPrefix(p.Tenant, p.Namespace)
	var names []string
	err := s.scanKeys(ctx, base+p.KeyPrefix, func(keys []string) error {
		for _, k := range keys {
			if name := k[len(base):]; name > p.After {
				names = append(names, name)
			}
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	slices.Sort(names)
	var recs []*storage.Record
	for len(names) > 0 && len(recs) <= limit {
		// Enough candidates for the rest of the page, assuming most live.
		chunk := names[:min(len(names), limit+1-len(recs))]
		names = names[len(chunk):]
		keys := make([]string, len(chunk))
		for i, n := range chunk {
			keys[i] = base + n
		}
		err := s.live(ctx, keys, func(key, val string) error {
			id := storage.ID{Tenant: p.Tenant, Namespace: p.Namespace, Key: key[len(base):]}
			rec, err := decodeRecord(id, val)
			if err != nil {
				return storage.Damaged(id, err)
			}
			recs = append(recs, rec)
			return nil
		})
		if err != nil {
			return nil, false, err
		}
	}
	if len(recs) > limit {
		return recs[:limit], true, nil
	}
	return recs, false, nil
}

// Stats implements storage.Store: SCAN for the tenant's (or the
// namespace's) keys and count the live records by namespace and state. It
// reads in chunks, so the counts are not one snapshot.
func (s *Store) Stats(ctx context.Context, tenant, namespace string) ([]storage.StatsRow, error) {
	prefix := s.tenantPrefix(tenant)
	if namespace != "" {
		prefix = s.nsPrefix(tenant, namespace)
	}
	tp := s.tenantPrefix(tenant)
	type group struct {
		ns    string
		state storage.State
	}
	counts := map[group]int64{}
	err := s.scanKeys(ctx, prefix, func(keys []string) error {
		return s.live(ctx, keys, func(key, val string) error {
			ns, k, ok := splitRecordKey(key[len(tp):])
			if !ok {
				return errCorrupt
			}
			rec, err := decodeRecord(storage.ID{Tenant: tenant, Namespace: ns, Key: k}, val)
			if err != nil {
				return storage.Damaged(storage.ID{Tenant: tenant, Namespace: ns, Key: k}, err)
			}
			counts[group{ns, rec.State}]++
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	rows := make([]storage.StatsRow, 0, len(counts))
	for g, n := range counts {
		rows = append(rows, storage.StatsRow{Namespace: g.ns, State: g.state, Count: n})
	}
	storage.SortStats(rows)
	return rows, nil
}

// splitRecordKey reads the namespace and key of "LEN:NS:KEY".
func splitRecordKey(rest string) (ns, key string, ok bool) {
	i := strings.IndexByte(rest, ':')
	if i < 0 {
		return "", "", false
	}
	n, err := strconv.Atoi(rest[:i])
	if err != nil || n < 0 || i+2+n > len(rest) || rest[i+1+n] != ':' {
		return "", "", false
	}
	return rest[i+1 : i+1+n], rest[i+2+n:], true
}

// damagedMark begins the error of a record the scripts cannot read.
const damagedMark = "idem:damaged"

// damagedAt is the error of the record at the Redis key k, which the
// scripts could not read: named when k is a record key of this store.
func (s *Store) damagedAt(k string, err error) error {
	rest, ok := strings.CutPrefix(k, s.opts.KeyPrefix+":{t")
	if ok {
		var hexTenant string
		hexTenant, rest, ok = strings.Cut(rest, "}:s:")
		tenant, herr := hex.DecodeString(hexTenant)
		if ns, key, kok := splitRecordKey(rest); ok && herr == nil && kok {
			return storage.Damaged(storage.ID{Tenant: string(tenant), Namespace: ns, Key: key}, err)
		}
	}
	// Named by hash, as logs name keys: the Redis key holds the caller's.
	return fmt.Errorf("%w (a redis key that does not parse, %s %s)", err, keyhash.Attr, keyhash.Of(k))
}

// Ping implements storage.Store.
func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return storage.ErrClosed
	}
	return s.mapErr(ctx, s.c.Ping(ctx).Err())
}

// Close implements storage.Store.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	return s.c.Close()
}

// parseReply splits a per-record script reply.
func parseReply(id storage.ID, res any) (code int64, detail string, rec *storage.Record, err error) {
	a, ok := res.([]any)
	if !ok || len(a) < 2 {
		return 0, "", nil, fmt.Errorf("idem: redis: unexpected script reply %T", res)
	}
	code, _ = a[0].(int64)
	detail, _ = a[1].(string)
	if code == codeFailed {
		if strings.HasPrefix(detail, damagedMark) {
			return 0, "", nil, storage.Damaged(id, errCorrupt)
		}
		return 0, "", nil, redisErr(detail)
	}
	if len(a) > 2 {
		v, ok := a[2].(string)
		if !ok {
			return 0, "", nil, errCorrupt
		}
		if rec, err = decodeRecord(id, v); err != nil {
			if !errors.Is(err, errCorrupt) {
				err = fmt.Errorf("%w: %w", errCorrupt, err)
			}
			return 0, "", nil, storage.Damaged(id, err)
		}
	}
	return code, detail, rec, nil
}

// recordOrErr turns a non-Reserve reply into the answer, with the same
// errors as storage's transition functions.
func recordOrErr(id storage.ID, token uint64, res any) (*storage.Record, error) {
	code, detail, rec, err := parseReply(id, res)
	if err != nil {
		return nil, err
	}
	switch code {
	case codeOK:
		if rec == nil {
			return nil, errCorrupt
		}
		return rec, nil
	case codeNotFound:
		return nil, storage.ErrNotFound
	case codeNotInProgress:
		return nil, storage.ErrNotInProgress
	case codeLeaseLost:
		switch detail {
		case "result":
			return nil, fmt.Errorf("%w: record already completed with a different result", storage.ErrLeaseLost)
		case "released":
			return nil, fmt.Errorf("%w: record was released", storage.ErrLeaseLost)
		case "completed":
			return nil, fmt.Errorf("%w: record already completed", storage.ErrLeaseLost)
		case "state":
			if rec != nil {
				return nil, fmt.Errorf("%w: record is %s", storage.ErrLeaseLost, rec.State)
			}
		case "token":
			if rec != nil {
				return nil, fmt.Errorf("%w: token %d, record holds token %d", storage.ErrLeaseLost, token, rec.Token)
			}
		}
		return nil, storage.ErrLeaseLost
	}
	return nil, fmt.Errorf("idem: redis: unexpected script reply code %d", code)
}

// redisLog sends go-redis's notices to slog at DEBUG.
type redisLog struct{ l *slog.Logger }

func (r redisLog) Printf(ctx context.Context, format string, v ...any) {
	r.l.DebugContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
}
