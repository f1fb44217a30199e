package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/idemhq/idem/internal/testenv"
	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/storagetest"
)

const defaultTestTimeout = 30 * time.Second

// offsetClock is the conformance suite's clock for a store whose now is
// Redis TIME: Advance adds to the offset the scripts add to TIME.
type offsetClock struct{ us atomic.Int64 }

func (c *offsetClock) Advance(d time.Duration) { c.us.Add(d.Microseconds()) }

// uniquePrefix keeps every store of every run in its own key space, so
// parallel runs against one Redis never see each other's keys.
func uniquePrefix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "idemtest-" + hex.EncodeToString(b[:])
}

// openTest opens a store on the test Redis under a fresh key prefix and
// deletes the prefix's keys when the test ends. extraQuery is appended to
// the URL.
func openTest(ctx context.Context, t testing.TB, extraQuery string) *Store {
	t.Helper()
	raw := testenv.RedisURL(t)
	prefix := uniquePrefix()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("IDEM_TEST_REDIS_URL: %v", err)
	}
	q := u.Query()
	q.Set("key_prefix", prefix)
	u.RawQuery = q.Encode()
	if extraQuery != "" {
		u.RawQuery += "&" + extraQuery
	}
	st, err := storage.Open(ctx, u.String(), storage.OpenOptions{})
	if err != nil {
		t.Fatalf("storage.Open(%s) error = %v, want nil", storage.Redacted(u.String()), err)
	}
	s := st.(*Store)
	t.Cleanup(func() {
		s.Close() // the suite may have closed it already
		cleanup(t, raw, prefix)
	})
	return s
}

// cleanup deletes every key under prefix with a client of its own.
func cleanup(t testing.TB, raw, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	o, err := goredis.ParseURL(raw)
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	c := goredis.NewClient(o)
	defer c.Close()
	iter := c.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Errorf("cleanup scan: %v", err)
		return
	}
	for len(keys) > 0 {
		n := min(len(keys), 500)
		if err := c.Unlink(ctx, keys[:n]...).Err(); err != nil {
			t.Errorf("cleanup unlink: %v", err)
			return
		}
		keys = keys[n:]
	}
}

type harness struct{}

func (harness) MakeStore(ctx context.Context, t *testing.T) (storage.Store, storagetest.Clock) {
	s := openTest(ctx, t, "")
	c := &offsetClock{}
	s.offset = c.us.Load
	return s, c
}

func (harness) MakeBenchStore(ctx context.Context, b *testing.B) storage.Store {
	return openTest(ctx, b, "")
}

// Damage stores bytes at id's record key that no record version decodes.
func (harness) Damage(ctx context.Context, t *testing.T, st storage.Store, id storage.ID) {
	t.Helper()
	s := st.(*Store)
	if err := s.c.Set(ctx, s.nsPrefix(id.Tenant, id.Namespace)+id.Key, "\x09\x09\x09", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestConformance(t *testing.T) {
	testenv.RedisURL(t) // skip (or fail under CI) once, not per subtest
	storagetest.RunConformanceTests(t, harness{})
}

func BenchmarkStore(b *testing.B) {
	testenv.RedisURL(b)
	storagetest.RunBenchmarks(b, harness{})
}

// BenchmarkReserveParallel50 is Reserve of new keys from 50 goroutines, the
// concurrency the end-to-end target names.
func BenchmarkReserveParallel50(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s := openTest(ctx, b, "pool_size=50")
	var n atomic.Int64
	fp := []byte("0123456789abcdef0123456789abcdef")
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	var failed atomic.Value
	const callers = 50
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := n.Add(1)
				if i > int64(b.N) {
					return
				}
				id := storage.ID{Tenant: "bench", Namespace: "/bench.v1.Bench/Do", Key: "k-" + strconv.FormatInt(i, 10)}
				out, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id, Fingerprint: fp, LeaseTTL: time.Minute, Retention: time.Hour})
				if err != nil || out != storage.OutcomeReserved {
					failed.Store(errors.Join(err, errors.New(out.String())))
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatalf("Reserve() failed: %v", err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reserves/s")
}

// BenchmarkReserveWait is Reserve with wait_replicas=0: the cost of the
// pipelined WAIT round trip itself, with no replica to wait for.
func BenchmarkReserveWait(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s := openTest(ctx, b, "wait_replicas=0")
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, _, err := s.Reserve(ctx, reserveParams("k-"+strconv.Itoa(i))); err != nil {
			b.Fatalf("Reserve() error = %v", err)
		}
	}
}

func testID(key string) storage.ID {
	return storage.ID{Tenant: "t", Namespace: "/x.v1.X/Y", Key: key}
}

func reserveParams(key string) storage.ReserveParams {
	return storage.ReserveParams{ID: testID(key), Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour}
}

// TestNoScriptRecovery flushes Redis's script cache between two operations,
// as a Redis restart or failover would; the next calls reload the scripts.
func TestNoScriptRecovery(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	s := openTest(ctx, t, "")
	out, rec, err := s.Reserve(ctx, reserveParams("a"))
	if err != nil || out != storage.OutcomeReserved {
		t.Fatalf("Reserve(a) = %v, %v; want RESERVED, nil", out, err)
	}
	flush := func() {
		t.Helper()
		if err := s.c.ScriptFlush(ctx).Err(); err != nil {
			t.Fatalf("SCRIPT FLUSH: %v", err)
		}
	}
	flush()
	if _, err := s.Complete(ctx, storage.CompleteParams{ID: rec.ID, Token: rec.Token, Retention: time.Hour}); err != nil {
		t.Fatalf("Complete() after SCRIPT FLUSH error = %v, want nil", err)
	}
	flush()
	items := []storage.ReserveParams{reserveParams("a"), reserveParams("b"), reserveParams("c")}
	rs, err := s.BatchReserve(ctx, items)
	if err != nil {
		t.Fatalf("BatchReserve() after SCRIPT FLUSH error = %v, want nil", err)
	}
	want := []storage.Outcome{storage.OutcomeCompleted, storage.OutcomeReserved, storage.OutcomeReserved}
	for i, r := range rs {
		if r.Err != nil || r.Outcome != want[i] {
			t.Errorf("BatchReserve()[%d] = %v, %v; want %v, nil", i, r.Outcome, r.Err, want[i])
		}
	}
	flush()
	recs, more, err := s.List(ctx, storage.ListParams{Tenant: "t", Namespace: "/x.v1.X/Y", Limit: 10})
	if err != nil || more || len(recs) != 3 {
		t.Fatalf("List() after SCRIPT FLUSH = %d records, more %v, %v; want 3, false, nil", len(recs), more, err)
	}
}

// TestUnavailable checks that a Redis that cannot be reached is
// ErrUnavailable, both at open and for an open store whose server went away.
func TestUnavailable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	// A port that was just free: nothing listens there.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	t.Run("Open", func(t *testing.T) {
		_, err := storage.Open(ctx, "redis://"+addr+"/0", storage.OpenOptions{})
		if !errors.Is(err, storage.ErrUnavailable) {
			t.Fatalf("Open(refused) error = %v, want errors.Is(err, ErrUnavailable)", err)
		}
	})
	t.Run("Op", func(t *testing.T) {
		// New with a client that never connected: Open would refuse it, so
		// build the Store around a client aimed at the dead port.
		c := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1})
		s := &Store{c: c, opts: DefaultOptions()}
		defer s.Close()
		checks := []struct {
			name string
			err  func() error
		}{
			{"Reserve", func() error { _, _, err := s.Reserve(ctx, reserveParams("a")); return err }},
			{"Lookup", func() error { _, err := s.Lookup(ctx, testID("a")); return err }},
			{"BatchReserve", func() error {
				_, err := s.BatchReserve(ctx, []storage.ReserveParams{reserveParams("a")})
				return err
			}},
			{"List", func() error {
				_, _, err := s.List(ctx, storage.ListParams{Tenant: "t", Namespace: "n", Limit: 1})
				return err
			}},
			{"Stats", func() error { _, err := s.Stats(ctx, "t", ""); return err }},
			{"Ping", func() error { return s.Ping(ctx) }},
		}
		for _, c := range checks {
			t.Run(c.name, func(t *testing.T) {
				if err := c.err(); !errors.Is(err, storage.ErrUnavailable) {
					t.Fatalf("%s() error = %v, want errors.Is(err, ErrUnavailable)", c.name, err)
				}
			})
		}
	})
}

// commandLog records the commands a client sends, pipelined or not.
type commandLog struct {
	mu   sync.Mutex
	cmds []string
}

func (l *commandLog) add(c goredis.Cmder) {
	name := strings.ToLower(c.Name())
	switch name {
	case "hello", "client", "auth", "select", "ping":
		return // connection setup
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cmds = append(l.cmds, name)
}

func (l *commandLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.cmds
	l.cmds = nil
	return c
}

func (l *commandLog) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (l *commandLog) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, c goredis.Cmder) error {
		l.add(c)
		return next(ctx, c)
	}
}

func (l *commandLog) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		for _, c := range cmds {
			l.add(c)
		}
		return next(ctx, cmds)
	}
}

// TestWaitReplicas checks that wait_replicas sends WAIT after every write
// and only after writes. The loopback Redis has no replicas: WAIT 0
// answers at once, WAIT 1 times out and the write reports ErrUnavailable.
func TestWaitReplicas(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()

	t.Run("Issued", func(t *testing.T) {
		s := openTest(ctx, t, "wait_replicas=0&wait_timeout=50ms")
		if s.opts.WaitReplicas != 0 || s.opts.WaitTimeout != 50*time.Millisecond {
			t.Fatalf("options = %+v, want WaitReplicas 0, WaitTimeout 50ms", s.opts)
		}
		log := &commandLog{}
		s.c.AddHook(log)
		_, rec, err := s.Reserve(ctx, reserveParams("a"))
		if err != nil {
			t.Fatalf("Reserve() error = %v, want nil", err)
		}
		if got, want := strings.Join(log.take(), " "), "evalsha wait"; got != want {
			t.Errorf("Reserve() sent %q, want %q", got, want)
		}
		if _, err := s.Lookup(ctx, rec.ID); err != nil {
			t.Fatalf("Lookup() error = %v, want nil", err)
		}
		if got, want := strings.Join(log.take(), " "), "evalsha"; got != want {
			t.Errorf("Lookup() sent %q, want %q", got, want)
		}
		if _, err := s.BatchReserve(ctx, []storage.ReserveParams{reserveParams("b"), reserveParams("c")}); err != nil {
			t.Fatalf("BatchReserve() error = %v, want nil", err)
		}
		if got, want := strings.Join(log.take(), " "), "evalsha wait"; got != want {
			t.Errorf("BatchReserve() of one tenant sent %q, want %q", got, want)
		}
		other := reserveParams("d")
		other.ID.Tenant = "other"
		if _, err := s.BatchReserve(ctx, []storage.ReserveParams{reserveParams("e"), other}); err != nil {
			t.Fatalf("BatchReserve() error = %v, want nil", err)
		}
		if got, want := strings.Join(log.take(), " "), "evalsha evalsha wait"; got != want {
			t.Errorf("BatchReserve() of two tenants sent %q, want %q", got, want)
		}
	})

	t.Run("Off", func(t *testing.T) {
		s := openTest(ctx, t, "")
		log := &commandLog{}
		s.c.AddHook(log)
		if _, _, err := s.Reserve(ctx, reserveParams("a")); err != nil {
			t.Fatalf("Reserve() error = %v, want nil", err)
		}
		if got, want := strings.Join(log.take(), " "), "evalsha"; got != want {
			t.Errorf("Reserve() sent %q, want %q", got, want)
		}
	})

	t.Run("NotEnoughReplicas", func(t *testing.T) {
		s := openTest(ctx, t, "wait_replicas=1&wait_timeout=20ms")
		_, _, err := s.Reserve(ctx, reserveParams("a"))
		if !errors.Is(err, storage.ErrUnavailable) {
			t.Fatalf("Reserve() with WAIT 1 and no replica error = %v, want errors.Is(err, ErrUnavailable)", err)
		}
	})
}

func TestOpenOptions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	bad := []struct {
		name, url, want string
	}{
		{"negative replicas", "redis://127.0.0.1:1/0?wait_replicas=-1", "wait_replicas"},
		{"bad timeout", "redis://127.0.0.1:1/0?wait_replicas=1&wait_timeout=soon", "wait_timeout"},
		{"brace in prefix", "redis://127.0.0.1:1/0?key_prefix=a%7Bb", "key prefix"},
		{"unknown option", "redis://127.0.0.1:1/0?colour=blue", "colour"},
		// go-redis lets db= override the path's database silently.
		{"db in path and query", "redis://127.0.0.1:1/1?db=2", "db"},
		{"db twice", "redis://127.0.0.1:1?db=1&db=2", "db"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := storage.Open(ctx, tc.url, storage.OpenOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "idem: ") {
				t.Fatalf("Open(%s) error = %v, want an idem: error naming %q", tc.url, err, tc.want)
			}
		})
	}
	t.Run("pool size", func(t *testing.T) {
		s := openTest(ctx, t, "pool_size=7")
		if got := s.c.(*goredis.Client).Options().PoolSize; got != 7 {
			t.Fatalf("PoolSize = %d, want 7", got)
		}
	})
}

// TestKeyLayout checks that a tenant's keys share one hash tag whatever the
// tenant contains, and that separators in namespaces and keys cannot make
// two records share a key.
func TestKeyLayout(t *testing.T) {
	s := &Store{opts: DefaultOptions()}
	tag := func(k string) string {
		i := strings.IndexByte(k, '{')
		j := strings.IndexByte(k[i+1:], '}')
		if i < 0 || j <= 0 {
			t.Fatalf("key %q has no non-empty hash tag", k)
		}
		return k[i+1 : i+1+j]
	}
	for _, tenant := range []string{"", "acme", "a}b", "{x}", "a:b"} {
		tags := map[string]bool{}
		for _, ns := range []string{"ns:1", "}{", ""} {
			tags[tag(s.nsPrefix(tenant, ns)+"key}{")] = true
		}
		if len(tags) != 1 {
			t.Errorf("tenant %q: keys carry tags %v, want one", tenant, tags)
		}
	}
	ids := []storage.ID{
		{Tenant: "a", Namespace: "n:1", Key: "k"},
		{Tenant: "a", Namespace: "n", Key: "1:k"},
		{Tenant: "a:n", Namespace: "1", Key: "k"},
		{Tenant: "a", Namespace: "n:1:", Key: ""},
	}
	seen := map[string]storage.ID{}
	for _, id := range ids {
		k := s.nsPrefix(id.Tenant, id.Namespace) + id.Key
		if other, ok := seen[k]; ok {
			t.Errorf("%+v and %+v share key %q", id, other, k)
		}
		seen[k] = id
	}
}

// TestOnlyRecords checks that the store writes nothing but records, each
// with its expiry, and that List and Stats, which find them with SCAN, skip
// records past their expires_at that Redis has not deleted yet, keys Redis
// already deleted, and keys whose names only look alike (glob characters in
// namespaces and key prefixes match themselves).
func TestOnlyRecords(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	s := openTest(ctx, t, "")
	c := &offsetClock{}
	s.offset = c.us.Load
	ns := "/x.v1.X/Y*"
	id := func(ns, k string) storage.ID { return storage.ID{Tenant: "t", Namespace: ns, Key: k} }
	reserve := func(id storage.ID, retention time.Duration) {
		t.Helper()
		if _, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: retention}); err != nil {
			t.Fatalf("Reserve(%+v) error = %v", id, err)
		}
	}
	for _, k := range []string{"a", "b", "c", "c?d", "c[x]"} {
		reserve(id(ns, k), 2*time.Hour)
	}
	reserve(id(ns, "short"), time.Minute)
	reserve(id("/x.v1.X/Yz", "other-ns"), 2*time.Hour)
	// Redis drops b by itself, as PXAT would.
	if err := s.c.Del(ctx, s.nsPrefix("t", ns)+"b").Err(); err != nil {
		t.Fatal(err)
	}
	c.Advance(30 * time.Minute) // "short" is past its expires_at, still in Redis

	var keys []string
	iter := s.c.Scan(ctx, 0, s.opts.KeyPrefix+":*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if iter.Err() != nil {
		t.Fatal(iter.Err())
	}
	if len(keys) != 6 {
		t.Errorf("keys under the prefix = %q, want the 6 records only", keys)
	}
	for _, k := range keys {
		if !strings.Contains(k, "}:s:") {
			t.Errorf("key %q is not a record", k)
		}
		if ttl := s.c.PTTL(ctx, k).Val(); ttl <= 0 {
			t.Errorf("PTTL(%q) = %v, want > 0", k, ttl)
		}
	}

	names := func(recs []*storage.Record) string {
		var out []string
		for _, r := range recs {
			out = append(out, r.Key)
		}
		return strings.Join(out, ",")
	}
	for _, tc := range []struct {
		p    storage.ListParams
		want string
		more bool
	}{
		{storage.ListParams{Limit: 10}, "a,c,c?d,c[x]", false},
		{storage.ListParams{Limit: 2}, "a,c", true},
		{storage.ListParams{After: "a", Limit: 2}, "c,c?d", true},
		{storage.ListParams{After: "c?d", Limit: 2}, "c[x]", false},
		{storage.ListParams{KeyPrefix: "c?", Limit: 10}, "c?d", false},
		{storage.ListParams{KeyPrefix: "c[", Limit: 10}, "c[x]", false},
		{storage.ListParams{KeyPrefix: "zz", Limit: 10}, "", false},
	} {
		tc.p.Tenant, tc.p.Namespace = "t", ns
		recs, more, err := s.List(ctx, tc.p)
		if err != nil || names(recs) != tc.want || more != tc.more {
			t.Errorf("List(%+v) = %q, more %v, %v; want %q, more %v", tc.p, names(recs), more, err, tc.want, tc.more)
		}
	}
	rows, err := s.Stats(ctx, "t", "")
	want := []storage.StatsRow{{Namespace: ns, State: storage.StateInProgress, Count: 4}, {Namespace: "/x.v1.X/Yz", State: storage.StateInProgress, Count: 1}}
	slices.SortFunc(want, func(a, b storage.StatsRow) int { return strings.Compare(a.Namespace, b.Namespace) })
	if err != nil || !slices.Equal(rows, want) {
		t.Errorf("Stats(t) = %+v, %v; want %+v", rows, err, want)
	}
	rows, err = s.Stats(ctx, "t", ns)
	if err != nil || len(rows) != 1 || rows[0].Count != 4 {
		t.Errorf("Stats(t, %q) = %+v, %v; want 4 IN_PROGRESS", ns, rows, err)
	}
}

// TestNativeExpiry checks that Redis itself will delete a record when its
// expires_at passes: the key's PEXPIRETIME follows every change of it.
func TestNativeExpiry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	s := openTest(ctx, t, "")
	key := s.nsPrefix("t", "/x.v1.X/Y") + "a"
	want := func(op string, rec *storage.Record) {
		t.Helper()
		us := rec.ExpiresAt.UnixMicro()
		wantMS := (us + 999) / 1000
		got, err := s.c.Do(ctx, "pexpiretime", key).Int64()
		if err != nil {
			t.Fatalf("PEXPIRETIME: %v", err)
		}
		if got != wantMS {
			t.Errorf("after %s: PEXPIRETIME = %d, want %d (ExpiresAt %v)", op, got, wantMS, rec.ExpiresAt)
		}
	}
	_, rec, err := s.Reserve(ctx, storage.ReserveParams{ID: testID("a"), Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	want("Reserve", rec)
	if rec, err = s.ExtendLease(ctx, rec.ID, rec.Token, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	want("ExtendLease", rec)
	if rec, err = s.Complete(ctx, storage.CompleteParams{ID: rec.ID, Token: rec.Token, Retention: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	want("Complete", rec)
}

// TestPrefixIsolation checks that stores with different key prefixes on one
// Redis (two deployments, or two test runs) never see each other's records.
func TestPrefixIsolation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	a, b := openTest(ctx, t, ""), openTest(ctx, t, "")
	for _, s := range []*Store{a, b} {
		if out, _, err := s.Reserve(ctx, reserveParams("k")); err != nil || out != storage.OutcomeReserved {
			t.Fatalf("Reserve(k) under prefix %s = %v, %v; want RESERVED, nil", s.opts.KeyPrefix, out, err)
		}
	}
	if _, err := a.Delete(ctx, testID("k")); err != nil {
		t.Fatalf("Delete() error = %v, want nil", err)
	}
	if _, err := b.Lookup(ctx, testID("k")); err != nil {
		t.Fatalf("Lookup() in the other prefix after Delete error = %v, want nil", err)
	}
	rows, err := a.Stats(ctx, "t", "")
	if err != nil || len(rows) != 0 {
		t.Fatalf("Stats() after Delete = %+v, %v; want no rows", rows, err)
	}
}

// tripLog counts what go-redis sends: single commands and pipelines, and
// the records each script call carries.
type tripLog struct {
	mu              sync.Mutex
	single, pipes   int
	pipelined, most int
	scripts, keys   int
	mostKeys        int
}

func (l *tripLog) DialHook(next goredis.DialHook) goredis.DialHook { return next }

// script notes an EVALSHA's key count. Under mu.
func (l *tripLog) script(c goredis.Cmder) {
	if c.Name() != "evalsha" {
		return
	}
	n, _ := c.Args()[2].(int)
	l.scripts++
	l.keys += n
	l.mostKeys = max(l.mostKeys, n)
}

func (l *tripLog) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, c goredis.Cmder) error {
		l.mu.Lock()
		l.single++
		l.script(c)
		l.mu.Unlock()
		return next(ctx, c)
	}
}

func (l *tripLog) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		l.mu.Lock()
		l.pipes++
		l.pipelined += len(cmds)
		l.most = max(l.most, len(cmds))
		for _, c := range cmds {
			l.script(c)
		}
		l.mu.Unlock()
		return next(ctx, cmds)
	}
}

// TestCoalescedPipelines checks that concurrent calls share script calls
// when coalescing is on, each still getting its own answer, and go one by
// one when it is off.
func TestCoalescedPipelines(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	for _, tc := range []struct {
		query  string
		shared bool
	}{{"coalesce=0", false}, {"coalesce=1", true}} {
		t.Run(tc.query, func(t *testing.T) {
			s := openTest(ctx, t, tc.query)
			log := &tripLog{}
			s.c.AddHook(log)
			const n = 200
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := range n {
				wg.Go(func() {
					key := fmt.Sprintf("k%03d", i)
					out, rec, err := s.Reserve(ctx, reserveParams(key))
					if err == nil && (out != storage.OutcomeReserved || rec.Key != key) {
						err = fmt.Errorf("Reserve(%s) = %v, %+v", key, out, rec)
					}
					errs <- err
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			log.mu.Lock()
			defer log.mu.Unlock()
			if log.keys != n {
				t.Errorf("%d Reserves sent %d records in all, want %d", n, log.keys, n)
			}
			if shared := log.scripts < n && log.mostKeys > 1; shared != tc.shared {
				t.Errorf("%d Reserves: %d script calls (most records in one: %d); shared = %v, want %v", n, log.scripts, log.mostKeys, shared, tc.shared)
			}
			t.Logf("%d Reserves: %d single commands, %d pipelines of %d commands, %d script calls, most records in one %d", n, log.single, log.pipes, log.pipelined, log.scripts, log.mostKeys)
		})
	}
}

// TestMergedScriptCalls checks how Reserves and Completes share script
// calls: one per script and tenant, at most coalesceMax records each, in
// order (a record named twice sees its first write), every item with its
// own answer.
func TestMergedScriptCalls(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	s := openTest(ctx, t, "")
	log := &tripLog{}
	s.c.AddHook(log)

	const n = 2*coalesceMax + 10
	items := make([]storage.ReserveParams, n)
	for i := range items {
		items[i] = reserveParams(fmt.Sprintf("k%03d", i%(n-5))) // the last 5 repeat the first 5
	}
	res, err := s.BatchReserve(ctx, items)
	if err != nil {
		t.Fatalf("BatchReserve(%d items) error = %v", n, err)
	}
	for i, r := range res {
		want := storage.OutcomeReserved
		if i >= n-5 {
			want = storage.OutcomeInProgress
		}
		if r.Err != nil || r.Outcome != want || r.Record.Key != items[i].ID.Key {
			t.Fatalf("item %d (%s) = %v, %+v, %v; want %v", i, items[i].ID.Key, r.Outcome, r.Record, r.Err, want)
		}
	}
	if log.scripts != 3 || log.keys != n || log.mostKeys != coalesceMax {
		t.Errorf("BatchReserve(%d items) sent %d script calls of %d records (most %d), want 3 of %d (most %d)", n, log.scripts, log.keys, log.mostKeys, n, coalesceMax)
	}

	// A coalesced batch mixing scripts and tenants.
	var calls []*call
	for i := range 6 {
		id := testID(fmt.Sprintf("m%d", i))
		id.Tenant = fmt.Sprintf("t%d", i%2)
		calls = append(calls, s.reserveCall(storage.ReserveParams{ID: id, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour}))
		calls = append(calls, s.completeCall(storage.CompleteParams{ID: id, Token: 1, Result: &storage.Result{Body: []byte("ok")}, Retention: time.Hour}))
	}
	calls = append(calls, s.recordCall(lookupScript, testID("k000")))
	send, ms := merge(calls)
	if len(send) != 5 || len(ms) != 4 {
		t.Fatalf("merge(6 Reserves and 6 Completes of 2 tenants, 1 Lookup) = %d calls, %d merged; want 5, 4", len(send), len(ms))
	}
	for i, err := range s.runCalls(ctx, calls) {
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	for i := 0; i < 12; i += 2 {
		id := testID(fmt.Sprintf("m%d", i/2))
		id.Tenant = fmt.Sprintf("t%d", i/2%2)
		if out, rec, err := parseReserve(id, calls[i].res); err != nil || out != storage.OutcomeReserved || rec.Key != id.Key || rec.Tenant != id.Tenant {
			t.Errorf("Reserve(%v) = %v, %+v, %v; want RESERVED", id, out, rec, err)
		}
		if rec, err := recordOrErr(id, 1, calls[i+1].res); err != nil || rec.State != storage.StateCompleted || string(rec.Result.Body) != "ok" {
			t.Errorf("Complete(%v) = %+v, %v; want COMPLETED with its result", id, rec, err)
		}
	}
	if rec, err := recordOrErr(testID("k000"), 0, calls[12].res); err != nil || rec.Key != "k000" {
		t.Errorf("Lookup(k000) = %+v, %v", rec, err)
	}
}
