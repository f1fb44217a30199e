package storagetest

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

// StressEnv, set to a duration (e.g. IDEM_STRESS=5m), makes Stress run that
// long instead of its short default.
const StressEnv = "IDEM_STRESS"

// StressConfig is one Stress run.
type StressConfig struct {
	Store storage.Store
	// Clock drives Store; the workers advance it as they go, so leases and
	// retentions run out while they write.
	Clock NowClock
	// Duration is how long the workers run; StressDuration picks it.
	Duration time.Duration
	// Workers and HotKeys default to 32 and 24.
	Workers int
	HotKeys int
	// Sweep, if set, deletes expired records now; it runs in a loop beside
	// the workers, on top of any background sweep of the store.
	Sweep func() error
}

// StressDuration returns IDEM_STRESS when set, else short (at most 1 s
// under -short).
func StressDuration(t *testing.T, short time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(StressEnv)
	if v == "" {
		if testing.Short() {
			return min(short, time.Second)
		}
		return short
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q is not a positive duration", StressEnv, v)
	}
	return d
}

// Times of a stress run, in the store's clock. Complete's retention is at
// least every lease and Reserve retention, and ExtendLease's TTL at least
// every Reserve lease, so a record's ExpiresAt and a holder's
// LeaseExpiresAt never move back: facts acknowledged earlier bound what
// later answers may show.
const (
	stressLeaseMin    = 20 * time.Millisecond
	stressLeaseMax    = 100 * time.Millisecond
	stressExtendTTL   = stressLeaseMax
	stressRetainMax   = 150 * time.Millisecond
	stressCompleteMin = stressRetainMax
	stressCompleteMax = 400 * time.Millisecond
	stressTenant      = "stress"
	stressHotNS       = "hot"
	stressFreshNS     = "fresh"
	stressMaxFailures = 20
)

// Stress runs Workers goroutines doing a random mix of every Store call on
// a few hot keys (so calls collide) and many fresh ones (so the store grows,
// compacts and sweeps), with short leases and retentions, and checks every
// answer against what earlier answers established:
//
//   - records are well formed and belong to the key asked for; none is
//     answered after its ExpiresAt;
//   - a generation of a key (a record from its creation to its expiry or
//     Delete, told apart by CreatedAt) grants each token once, in order,
//     never takes over a lease acknowledged to be live unless released,
//     and never shows a token, ExpiresAt or lease older than an answer
//     acknowledged before the call began;
//   - a COMPLETED record keeps its token and result until it is gone;
//   - a record never vanishes before its acknowledged ExpiresAt unless
//     deleted, and neither a deleted nor an older generation comes back;
//   - calls succeed or fail only with the sentinel errors, and each answer
//     is its caller's own (the test spoils every answer it has checked).
//
// At the end, every record must be gone once the clock passes every
// retention and Sweep (if set) ran. It returns the number of calls made.
func Stress(t *testing.T, c StressConfig) int64 {
	t.Helper()
	if c.Workers == 0 {
		c.Workers = 32
	}
	if c.HotKeys == 0 {
		c.HotKeys = 24
	}
	ck := &checker{t: t, clock: c.Clock, seed: maphash.MakeSeed()}
	stressEpoch.Store(c.Clock.Now().UnixNano())
	for i := range ck.shards {
		ck.shards[i].m = map[string]*keyState{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.Duration+5*time.Minute)
	defer cancel()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ops atomic.Int64
	for w := range c.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wk := &worker{id: w, ck: ck, s: c.Store, ctx: ctx, hot: c.HotKeys, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(w)))}
			for n := 0; ; n++ {
				if n%64 == 0 {
					select {
					case <-stop:
						ops.Add(int64(n))
						wk.forgetAll()
						return
					default:
					}
					if ck.failures.Load() >= stressMaxFailures {
						ops.Add(int64(n))
						return
					}
				}
				wk.step()
			}
		}()
	}
	var sweepErr error
	sweepDone := make(chan struct{})
	go func() {
		defer close(sweepDone)
		for c.Sweep != nil {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			if err := c.Sweep(); err != nil {
				sweepErr = err
				return
			}
		}
	}()
	select {
	case <-time.After(c.Duration):
	case <-ctx.Done():
	}
	close(stop)
	wg.Wait()
	<-sweepDone
	if sweepErr != nil {
		t.Errorf("Sweep() error = %v", sweepErr)
	}
	t.Logf("answers: %s", ck.summary())
	if t.Failed() {
		return ops.Load()
	}

	// Every hot key answers consistently once the writers stopped, and is
	// gone once every retention has passed.
	fin := &worker{id: -1, ck: ck, s: c.Store, ctx: ctx, hot: c.HotKeys, rng: rand.New(rand.NewPCG(1, 2))}
	for i := range c.HotKeys {
		fin.lookup(fin.hotID(i))
	}
	c.Clock.Advance(stressCompleteMax + stressLeaseMax + time.Second)
	if c.Sweep != nil {
		if err := c.Sweep(); err != nil {
			t.Errorf("final Sweep() error = %v", err)
		}
	}
	for i := range c.HotKeys {
		id := fin.hotID(i)
		if r, err := c.Store.Lookup(ctx, id); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Lookup(%s) after every retention = %v, %v; want NOT_FOUND", id.Key, brief(r), err)
		}
	}
	for _, ns := range []string{stressHotNS, stressFreshNS} {
		if recs, _, err := c.Store.List(ctx, storage.ListParams{Tenant: stressTenant, Namespace: ns, Limit: 10}); err != nil || len(recs) > 0 {
			t.Errorf("List(%s) after every retention = %d records, %v; want none", ns, len(recs), err)
		}
	}
	return ops.Load()
}

// checker holds what answers have established, per key. Each answer is
// checked and recorded under its key's shard lock with a sequence number
// taken under that lock, so every fact acknowledged before a call began
// (by sequence) is there when the call's answer is checked.
type checker struct {
	t        *testing.T
	clock    NowClock
	seed     maphash.Seed
	seq      atomic.Uint64
	failures atomic.Int64
	counts   sync.Map // name → *atomic.Int64, for the summary
	shards   [64]struct {
		mu sync.Mutex
		m  map[string]*keyState
	}
}

// span is one call: sequence number and clock when it began and ended. The
// store's now for the call lies in [t0, t1].
type span struct {
	s0, s1 uint64
	t0, t1 int64
}

type seqVal struct {
	v   int64
	seq uint64
}

// raises is an increasing value with the sequence numbers at which it
// rose, the last few of them.
type raises []seqVal

func (r *raises) add(v int64, seq uint64) {
	if n := len(*r); n > 0 && (*r)[n-1].v >= v {
		return
	}
	if len(*r) == 8 {
		*r = append((*r)[:0], (*r)[1:]...)
	}
	*r = append(*r, seqVal{v, seq})
}

// before is the value acknowledged before seq, or 0.
func (r raises) before(seq uint64) int64 {
	for i := len(r) - 1; i >= 0; i-- {
		if r[i].seq < seq {
			return r[i].v
		}
	}
	return 0
}

type grant struct {
	tok    uint64
	start  uint64 // s0 of the call that got it
	leases raises
}

// gen is one generation of a key: the record from its creation on.
type gen struct {
	created  int64
	firstAck uint64
	fp       string
	// ambiguous: a Delete ran at the instant the generation was created, so
	// two generations may share its CreatedAt; nothing is checked on it.
	ambiguous bool
	grants    map[uint64]*grant
	toks      raises
	exps      raises
	done      *storage.Record // the COMPLETED record
	doneAck   uint64
}

type deleteFact struct {
	created int64 // of the deleted generation
	t0, t1  int64
	ack     uint64
}

type event struct {
	op  string
	sp  span
	arg uint64
	out string
}

type keyState struct {
	gens          []*gen // by CreatedAt, the last few
	deletes       []deleteFact
	delInFlight   int
	relInFlight   int
	relEnd        map[uint64]uint64 // token → last end of a Release with it
	forceInFlight int
	forceEnd      uint64
	log           []event // the last calls, for failure messages
}

func (c *checker) shard(key string) *struct {
	mu sync.Mutex
	m  map[string]*keyState
} {
	return &c.shards[maphash.String(c.seed, key)%uint64(len(c.shards))]
}

// lock returns key's state with its shard locked.
func (c *checker) lock(key string) (*keyState, func()) {
	sh := c.shard(key)
	sh.mu.Lock()
	ks := sh.m[key]
	if ks == nil {
		ks = &keyState{relEnd: map[uint64]uint64{}}
		sh.m[key] = ks
	}
	return ks, sh.mu.Unlock
}

func (c *checker) count(name string) {
	v, ok := c.counts.Load(name)
	if !ok {
		v, _ = c.counts.LoadOrStore(name, new(atomic.Int64))
	}
	v.(*atomic.Int64).Add(1)
}

func (c *checker) summary() string {
	var parts []string
	c.counts.Range(func(k, v any) bool {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v.(*atomic.Int64).Load()))
		return true
	})
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

func (c *checker) forget(key string) {
	sh := c.shard(key)
	sh.mu.Lock()
	delete(sh.m, key)
	sh.mu.Unlock()
}

func (c *checker) begin() span {
	return span{s0: c.seq.Add(1), t0: c.clock.Now().UnixNano()}
}

// end finishes sp; the caller holds the key's lock.
func (c *checker) end(sp span, t1 int64) span {
	sp.t1 = t1
	sp.s1 = c.seq.Add(1)
	return sp
}

func (c *checker) fail(ks *keyState, key string, format string, args ...any) {
	if c.failures.Add(1) > stressMaxFailures {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "key %s: %s\nlast calls on the key (seq s0-s1, clock t0-t1 in ms from the first):", key, fmt.Sprintf(format, args...))
	for _, e := range ks.log {
		fmt.Fprintf(&b, "\n  %-13s %d-%d  %s-%s  arg=%d  %s", e.op, e.sp.s0, e.sp.s1, ms(e.sp.t0), ms(e.sp.t1), e.arg, e.out)
	}
	c.t.Error(b.String())
}

// stressEpoch is the clock when the run began; messages count from it.
var stressEpoch atomic.Int64

func ms(ns int64) string {
	return strconv.FormatFloat(float64(ns-stressEpoch.Load())/1e6, 'f', 3, 64)
}

func (ks *keyState) note(op string, sp span, arg uint64, out string) {
	if len(ks.log) == 24 {
		ks.log = append(ks.log[:0], ks.log[1:]...)
	}
	ks.log = append(ks.log, event{op, sp, arg, out})
}

func brief(r *storage.Record) string {
	if r == nil {
		return "<nil>"
	}
	s := fmt.Sprintf("{%s tok=%d created=%s lease=%s exp=%s", r.State, r.Token, ms(r.CreatedAt.UnixNano()), ms(r.LeaseExpiresAt.UnixNano()), ms(r.ExpiresAt.UnixNano()))
	if r.Result != nil {
		s += " result=" + string(r.Result.Body)
	}
	return s + "}"
}

func (ks *keyState) gen(created int64) *gen {
	for _, g := range ks.gens {
		if g.created == created {
			return g
		}
	}
	return nil
}

// latestBefore is the newest generation acknowledged before seq.
func (ks *keyState) latestBefore(seq uint64) *gen {
	var l *gen
	for _, g := range ks.gens {
		if g.firstAck < seq && (l == nil || g.created > l.created) {
			l = g
		}
	}
	return l
}

func (ks *keyState) deleted(created int64) bool {
	for _, d := range ks.deletes {
		if d.created == created {
			return true
		}
	}
	return false
}

// wellFormed checks what a record must satisfy on its own.
func wellFormed(r *storage.Record, id storage.ID, sp span) string {
	switch {
	case r.ID != id:
		return fmt.Sprintf("answer is the record of %+v", r.ID)
	case string(r.Fingerprint) != "fp/"+id.Key && string(r.Fingerprint) != "fpx/"+id.Key:
		return fmt.Sprintf("fingerprint %q was never sent for this key", r.Fingerprint)
	case r.Token == 0 || uint64(r.Attempts) != r.Token:
		return fmt.Sprintf("token %d with %d attempts", r.Token, r.Attempts)
	case !r.ExpiresAt.After(time.Unix(0, sp.t0)):
		return fmt.Sprintf("answered expired (expires_at %s, call began at %s)", ms(r.ExpiresAt.UnixNano()), ms(sp.t0))
	case r.CreatedAt.UnixNano() > sp.t1:
		return "created after the call ended"
	case !r.LeaseExpiresAt.After(r.CreatedAt):
		return "lease ends before creation"
	}
	if cp := r.Checkpoint; cp != nil {
		k, tok, ok := parseTag(cp.Phase)
		if !ok || k != id.Key || tok > r.Token || string(cp.Data) != cp.Phase {
			return fmt.Sprintf("checkpoint %q/%q was never written to this record", cp.Phase, cp.Data)
		}
	}
	switch r.State {
	case storage.StateInProgress, storage.StateReleased:
		if r.Result != nil || !r.CompletedAt.IsZero() {
			return "result on a record that is not completed"
		}
		if r.State == storage.StateInProgress && r.LeaseExpiresAt.After(r.ExpiresAt) {
			return "lease outlives the record"
		}
	case storage.StateCompleted:
		if r.Result == nil || r.CompletedAt.Before(r.CreatedAt) || r.CompletedAt.UnixNano() > sp.t1 {
			return "completed without a result or with a bad completed_at"
		}
		k, tok, ok := parseTag(string(r.Result.Body))
		if !ok || k != id.Key || tok != r.Token || r.Result.Message != string(r.Result.Body) {
			return fmt.Sprintf("result %q was never sent for this record", r.Result.Body)
		}
	default:
		return "unknown state"
	}
	return ""
}

// tag names the writer of a result or checkpoint: key, token and a nonce.
func tag(key string, tok uint64, nonce uint64) string {
	return fmt.Sprintf("%s|%d|%x", key, tok, nonce)
}

func parseTag(s string) (key string, tok uint64, ok bool) {
	parts := strings.Split(s, "|")
	if len(parts) != 3 {
		return "", 0, false
	}
	tok, err := strconv.ParseUint(parts[1], 10, 64)
	return parts[0], tok, err == nil
}

// observe checks an answer about id: r, or absence when r is nil. The
// caller holds the key's lock and has ended sp.
func (c *checker) observe(ks *keyState, id storage.ID, key string, sp span, r *storage.Record) *gen {
	prev := ks.latestBefore(sp.s0)
	var created int64
	if r != nil {
		if msg := wellFormed(r, id, sp); msg != "" {
			c.fail(ks, key, "%s: %s", brief(r), msg)
			return nil
		}
		created = r.CreatedAt.UnixNano()
		if prev != nil && created < prev.created {
			c.fail(ks, key, "%s: an older generation than %s answered", brief(r), ms(prev.created))
		}
		for _, d := range ks.deletes {
			if d.ack < sp.s0 && d.created == created && d.t0 > created {
				c.fail(ks, key, "%s: answered after its Delete", brief(r))
			}
		}
	}
	if prev != nil && (r == nil || created != prev.created) && ks.delInFlight == 0 && !ks.deleted(prev.created) {
		c.count("generation-ended")
		if e := prev.exps.before(sp.s0); e > sp.t1 {
			c.fail(ks, key, "generation %s acknowledged to expire at %s is gone at %s (answer %s)", ms(prev.created), ms(e), ms(sp.t1), brief(r))
		}
	}
	if r == nil {
		return nil
	}
	g := ks.gen(created)
	if g == nil {
		g = &gen{created: created, firstAck: sp.s1, fp: string(r.Fingerprint), grants: map[uint64]*grant{}}
		for _, d := range ks.deletes {
			if d.t0 <= created && created <= d.t1 {
				g.ambiguous = true
			}
		}
		ks.gens = append(ks.gens, g)
		if len(ks.gens) > 6 {
			ks.gens = ks.gens[1:]
		}
	}
	if ks.delInFlight > 0 {
		// A Delete may be making room for a second generation with this
		// CreatedAt.
		g.ambiguous = true
	}
	if g.ambiguous {
		return g
	}
	switch {
	case g.fp != string(r.Fingerprint):
		c.fail(ks, key, "%s: fingerprint changed from %q", brief(r), g.fp)
	case r.Token < uint64(g.toks.before(sp.s0)):
		c.fail(ks, key, "%s: token went back from %d", brief(r), g.toks.before(sp.s0))
	case r.ExpiresAt.UnixNano() < g.exps.before(sp.s0):
		c.fail(ks, key, "%s: expires_at went back from %s", brief(r), ms(g.exps.before(sp.s0)))
	case g.done != nil && r.State == storage.StateCompleted && (g.done.Token != r.Token || !g.done.Result.Equal(r.Result) || !g.done.CompletedAt.Equal(r.CompletedAt)):
		c.fail(ks, key, "%s: completed record changed from %s", brief(r), brief(g.done))
	case g.done != nil && r.State != storage.StateCompleted && g.doneAck < sp.s0:
		c.fail(ks, key, "%s: completed record %s went back", brief(r), brief(g.done))
	}
	if r.State == storage.StateCompleted && g.done == nil {
		g.done, g.doneAck = r.Clone(), sp.s1
	}
	if gr := g.grants[r.Token]; gr != nil && r.State == storage.StateInProgress {
		gr.leases.add(r.LeaseExpiresAt.UnixNano(), sp.s1)
	}
	g.toks.add(int64(r.Token), sp.s1)
	g.exps.add(r.ExpiresAt.UnixNano(), sp.s1)
	return g
}

// granted checks a RESERVED answer, which observe has checked as an answer.
func (c *checker) granted(ks *keyState, key string, sp span, r *storage.Record, g *gen) {
	if g == nil || g.ambiguous {
		return
	}
	if r.State != storage.StateInProgress || r.Result != nil || r.Checkpoint != nil && r.Token == 1 {
		c.fail(ks, key, "%s: RESERVED with this record", brief(r))
	}
	if g.grants[r.Token] != nil {
		c.fail(ks, key, "%s: token %d granted twice", brief(r), r.Token)
		return
	}
	if prev := g.grants[r.Token-1]; prev != nil {
		if l := prev.leases.before(sp.s0); l > sp.t1 && ks.relInFlight == 0 && ks.relEnd[prev.tok] <= prev.start && ks.forceInFlight == 0 && ks.forceEnd <= prev.start {
			c.fail(ks, key, "%s: took over token %d whose lease was acknowledged to run to %s", brief(r), prev.tok, ms(l))
		}
	}
	if r.Token == 1 && r.CreatedAt.UnixNano() < sp.t0 {
		c.fail(ks, key, "%s: new record created before the call", brief(r))
	}
	if r.Token > 1 {
		c.count("takeover")
	}
	gr := &grant{tok: r.Token, start: sp.s0}
	gr.leases.add(r.LeaseExpiresAt.UnixNano(), sp.s1)
	g.grants[r.Token] = gr
}

// worker makes calls and remembers the tokens it holds.
type worker struct {
	id    int
	ck    *checker
	s     storage.Store
	ctx   context.Context
	hot   int
	rng   *rand.Rand
	holds []hold
	stale []hold
	fresh []storage.ID
	nfree int
}

type hold struct {
	id  storage.ID
	tok uint64
}

func (w *worker) hotID(i int) storage.ID {
	return storage.ID{Tenant: stressTenant, Namespace: stressHotNS, Key: "k" + strconv.Itoa(i)}
}

func ckey(id storage.ID) string { return id.Namespace + "/" + id.Key }

func (w *worker) newFresh() storage.ID {
	w.nfree++
	id := storage.ID{Tenant: stressTenant, Namespace: stressFreshNS, Key: fmt.Sprintf("w%d-%d", w.id, w.nfree)}
	if len(w.fresh) == 64 {
		w.ck.forget(ckey(w.fresh[0]))
		w.fresh = append(w.fresh[:0], w.fresh[1:]...)
	}
	w.fresh = append(w.fresh, id)
	return id
}

func (w *worker) forgetAll() {
	for _, id := range w.fresh {
		w.ck.forget(ckey(id))
	}
	w.fresh = nil
}

// pickID is a hot key mostly, else a new or a recent fresh key.
func (w *worker) pickID() storage.ID {
	switch n := w.rng.IntN(10); {
	case n < 7:
		return w.hotID(w.rng.IntN(w.hot))
	case n < 9 || len(w.fresh) == 0:
		return w.newFresh()
	default:
		return w.fresh[w.rng.IntN(len(w.fresh))]
	}
}

func (w *worker) reserveParams(id storage.ID) storage.ReserveParams {
	fp := "fp/" + id.Key
	if w.rng.IntN(30) == 0 {
		fp = "fpx/" + id.Key
	}
	lease := stressLeaseMin + rand.N(stressLeaseMax-stressLeaseMin)
	return storage.ReserveParams{ID: id, Fingerprint: []byte(fp), LeaseTTL: lease, Retention: lease + rand.N(stressRetainMax-lease)}
}

// takeHold removes and returns a held token, or a stale one now and then.
func (w *worker) takeHold() (hold, bool) {
	if len(w.stale) > 0 && w.rng.IntN(8) == 0 {
		return w.stale[w.rng.IntN(len(w.stale))], true
	}
	if len(w.holds) == 0 {
		return hold{}, false
	}
	i := w.rng.IntN(len(w.holds))
	h := w.holds[i]
	w.holds = append(w.holds[:i], w.holds[i+1:]...)
	w.addStale(h)
	return h, true
}

func (w *worker) addStale(h hold) {
	if len(w.stale) == 16 {
		w.stale = append(w.stale[:0], w.stale[1:]...)
	}
	w.stale = append(w.stale, h)
}

func (w *worker) keep(h hold) {
	if len(w.holds) == 16 {
		w.addStale(w.holds[0])
		w.holds = append(w.holds[:0], w.holds[1:]...)
	}
	w.holds = append(w.holds, h)
}

func (w *worker) step() {
	if w.rng.IntN(8) == 0 {
		w.ck.clock.Advance(rand.N(time.Millisecond))
	}
	switch n := w.rng.IntN(100); {
	case n < 25:
		w.reserve(w.pickID())
	case n < 40:
		if h, ok := w.takeHold(); ok {
			w.complete(h)
		}
	case n < 46:
		if h, ok := w.takeHold(); ok {
			w.release(h)
		}
	case n < 52:
		if h, ok := w.takeHold(); ok {
			w.extend(h)
		}
	case n < 58:
		if h, ok := w.takeHold(); ok {
			w.checkpoint(h)
		}
	case n < 73:
		if w.rng.IntN(4) == 0 && len(w.fresh) > 0 {
			w.lookup(w.fresh[w.rng.IntN(len(w.fresh))])
		} else {
			w.lookup(w.hotID(w.rng.IntN(w.hot)))
		}
	case n < 82:
		w.batchReserve()
	case n < 90:
		w.batchComplete()
	case n < 92:
		w.delete(w.hotID(w.rng.IntN(w.hot)))
	case n < 94:
		w.forceRelease(w.hotID(w.rng.IntN(w.hot)))
	case n < 96:
		w.list()
	default:
		// A token nobody may hold.
		w.complete(hold{w.hotID(w.rng.IntN(w.hot)), uint64(w.rng.IntN(4))})
	}
}

// call runs f between the span's two clock readings.
func (w *worker) call(f func()) (span, int64) {
	sp := w.ck.begin()
	f()
	return sp, w.ck.clock.Now().UnixNano()
}

// unexpected fails on an error other than the allowed sentinels.
func (w *worker) unexpected(ks *keyState, key, op string, err error, allowed ...error) bool {
	if err == nil {
		return false
	}
	for _, a := range allowed {
		if errors.Is(err, a) {
			return false
		}
	}
	w.ck.fail(ks, key, "%s: unexpected error %v", op, err)
	return true
}

func errName(err error) string {
	for _, e := range []error{storage.ErrNotFound, storage.ErrLeaseLost, storage.ErrNotInProgress} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	if err != nil {
		return "other"
	}
	return "ok"
}

func outcomeString(o storage.Outcome, r *storage.Record, err error) string {
	if err != nil {
		return "err=" + err.Error()
	}
	if o == 0 {
		return brief(r)
	}
	return o.String() + " " + brief(r)
}

func (w *worker) reserve(id storage.ID) {
	p := w.reserveParams(id)
	var out storage.Outcome
	var r *storage.Record
	var err error
	sp, t1 := w.call(func() { out, r, err = w.s.Reserve(w.ctx, p) })
	w.reserved(sp, t1, p, out, r, err, "Reserve")
}

func (w *worker) reserved(sp span, t1 int64, p storage.ReserveParams, out storage.Outcome, r *storage.Record, err error, op string) {
	key := ckey(p.ID)
	ks, unlock := w.ck.lock(key)
	defer unlock()
	defer scribble(r)
	sp = w.ck.end(sp, t1)
	ks.note(op, sp, 0, outcomeString(out, r, err))
	w.ck.count(op + "/" + outcomeString(out, nil, err)[:4])
	if w.unexpected(ks, key, op, err) {
		return
	}
	if r == nil {
		w.ck.fail(ks, key, "%s: %s without a record", op, out)
		return
	}
	g := w.ck.observe(ks, p.ID, key, sp, r)
	switch out {
	case storage.OutcomeReserved:
		if string(r.Fingerprint) != string(p.Fingerprint) {
			w.ck.fail(ks, key, "%s: RESERVED a record of another fingerprint", op)
		}
		w.ck.granted(ks, key, sp, r, g)
		w.keep(hold{p.ID, r.Token})
	case storage.OutcomeMismatch:
		if string(r.Fingerprint) == string(p.Fingerprint) {
			w.ck.fail(ks, key, "%s: MISMATCH on an equal fingerprint", op)
		}
	case storage.OutcomeCompleted, storage.OutcomeInProgress:
		want := storage.StateCompleted
		if out == storage.OutcomeInProgress {
			want = storage.StateInProgress
			if !r.LeaseExpiresAt.After(time.Unix(0, sp.t0)) {
				w.ck.fail(ks, key, "%s: IN_PROGRESS with a lease that had ended when the call began", op)
			}
		}
		if r.State != want || string(r.Fingerprint) != string(p.Fingerprint) {
			w.ck.fail(ks, key, "%s: %s with this record", op, out)
		}
	default:
		w.ck.fail(ks, key, "%s: outcome %d", op, out)
	}
}

func (w *worker) result(h hold) *storage.Result {
	t := tag(h.id.Key, h.tok, w.rng.Uint64())
	return &storage.Result{Code: int32(w.rng.IntN(3)), Message: t, Body: []byte(t)}
}

func (w *worker) completeParams(h hold) storage.CompleteParams {
	return storage.CompleteParams{ID: h.id, Token: h.tok, Result: w.result(h), Retention: stressCompleteMin + rand.N(stressCompleteMax-stressCompleteMin)}
}

func (w *worker) complete(h hold) {
	p := w.completeParams(h)
	var r *storage.Record
	var err error
	sp, t1 := w.call(func() { r, err = w.s.Complete(w.ctx, p) })
	w.completed(sp, t1, p, r, err, "Complete")
	if err == nil && w.rng.IntN(4) == 0 {
		// Its own retry must not fail while the record is there.
		sp, t1 := w.call(func() { r, err = w.s.Complete(w.ctx, p) })
		w.completed(sp, t1, p, r, err, "Complete again")
	}
}

func (w *worker) completed(sp span, t1 int64, p storage.CompleteParams, r *storage.Record, err error, op string) {
	key := ckey(p.ID)
	ks, unlock := w.ck.lock(key)
	defer unlock()
	defer scribble(r)
	sp = w.ck.end(sp, t1)
	ks.note(op, sp, p.Token, outcomeString(0, r, err))
	w.ck.count(op + "/" + errName(err))
	if w.unexpected(ks, key, op, err, storage.ErrNotFound, storage.ErrLeaseLost) {
		return
	}
	if errors.Is(err, storage.ErrNotFound) {
		w.ck.observe(ks, p.ID, key, sp, nil)
		return
	}
	if err != nil {
		return
	}
	if r == nil || r.State != storage.StateCompleted || r.Token != p.Token || !r.Result.Equal(p.Result) {
		w.ck.fail(ks, key, "%s with token %d, result %s succeeded with %s", op, p.Token, p.Result.Body, brief(r))
		return
	}
	w.ck.observe(ks, p.ID, key, sp, r)
}

// tokenCall is Release, ExtendLease, Checkpoint and ForceRelease: a call on
// one record that answers it or an error.
func (w *worker) tokenCall(op string, id storage.ID, tok uint64, want storage.State, f func() (*storage.Record, error), allowed ...error) {
	key := ckey(id)
	isRelease, isForce := op == "Release", op == "ForceRelease"
	if isRelease || isForce {
		ks, unlock := w.ck.lock(key)
		if isRelease {
			ks.relInFlight++
		} else {
			ks.forceInFlight++
		}
		unlock()
	}
	var r *storage.Record
	var err error
	sp, t1 := w.call(func() { r, err = f() })
	ks, unlock := w.ck.lock(key)
	defer unlock()
	defer scribble(r)
	sp = w.ck.end(sp, t1)
	switch {
	case isRelease:
		ks.relInFlight--
		ks.relEnd[tok] = sp.s1
	case isForce:
		ks.forceInFlight--
		ks.forceEnd = sp.s1
	}
	ks.note(op, sp, tok, outcomeString(0, r, err))
	w.ck.count(op + "/" + errName(err))
	if w.unexpected(ks, key, op, err, allowed...) {
		return
	}
	if errors.Is(err, storage.ErrNotFound) {
		w.ck.observe(ks, id, key, sp, nil)
		return
	}
	if err != nil {
		return
	}
	if r == nil || r.State != want || (!isForce && r.Token != tok) {
		w.ck.fail(ks, key, "%s with token %d succeeded with %s", op, tok, brief(r))
		return
	}
	w.ck.observe(ks, id, key, sp, r)
	if op == "ExtendLease" && r.LeaseExpiresAt.UnixNano() < sp.t0+int64(stressExtendTTL) {
		w.ck.fail(ks, key, "%s: lease ends at %s, before the call began plus its TTL", op, ms(r.LeaseExpiresAt.UnixNano()))
	}
	if op == "Checkpoint" && (r.Checkpoint == nil || r.Checkpoint.Phase != tag(id.Key, tok, 0)) {
		w.ck.fail(ks, key, "%s: answered checkpoint %v", op, r.Checkpoint)
	}
}

func (w *worker) release(h hold) {
	w.tokenCall("Release", h.id, h.tok, storage.StateReleased, func() (*storage.Record, error) {
		return w.s.Release(w.ctx, h.id, h.tok)
	}, storage.ErrNotFound, storage.ErrLeaseLost)
}

func (w *worker) extend(h hold) {
	w.tokenCall("ExtendLease", h.id, h.tok, storage.StateInProgress, func() (*storage.Record, error) {
		return w.s.ExtendLease(w.ctx, h.id, h.tok, stressExtendTTL)
	}, storage.ErrNotFound, storage.ErrLeaseLost)
	w.keep(h)
}

func (w *worker) checkpoint(h hold) {
	t := tag(h.id.Key, h.tok, 0)
	w.tokenCall("Checkpoint", h.id, h.tok, storage.StateInProgress, func() (*storage.Record, error) {
		return w.s.Checkpoint(w.ctx, h.id, h.tok, storage.Checkpoint{Phase: t, Data: []byte(t)})
	}, storage.ErrNotFound, storage.ErrLeaseLost)
	w.keep(h)
}

func (w *worker) forceRelease(id storage.ID) {
	w.tokenCall("ForceRelease", id, 0, storage.StateReleased, func() (*storage.Record, error) {
		return w.s.ForceRelease(w.ctx, id)
	}, storage.ErrNotFound, storage.ErrNotInProgress)
}

func (w *worker) lookup(id storage.ID) {
	var r *storage.Record
	var err error
	sp, t1 := w.call(func() { r, err = w.s.Lookup(w.ctx, id) })
	key := ckey(id)
	ks, unlock := w.ck.lock(key)
	defer unlock()
	defer scribble(r)
	sp = w.ck.end(sp, t1)
	ks.note("Lookup", sp, 0, outcomeString(0, r, err))
	w.ck.count("Lookup/" + errName(err))
	if w.unexpected(ks, key, "Lookup", err, storage.ErrNotFound) {
		return
	}
	if (err == nil) != (r != nil) {
		w.ck.fail(ks, key, "Lookup = %s, %v", brief(r), err)
		return
	}
	w.ck.observe(ks, id, key, sp, r)
}

func (w *worker) delete(id storage.ID) {
	key := ckey(id)
	ks, unlock := w.ck.lock(key)
	ks.delInFlight++
	unlock()
	var r *storage.Record
	var err error
	sp, t1 := w.call(func() { r, err = w.s.Delete(w.ctx, id) })
	ks, unlock = w.ck.lock(key)
	defer unlock()
	defer scribble(r)
	sp = w.ck.end(sp, t1)
	ks.delInFlight--
	ks.note("Delete", sp, 0, outcomeString(0, r, err))
	w.ck.count("Delete/" + errName(err))
	if w.unexpected(ks, key, "Delete", err, storage.ErrNotFound) {
		return
	}
	if (err == nil) != (r != nil) {
		w.ck.fail(ks, key, "Delete = %s, %v", brief(r), err)
		return
	}
	w.ck.observe(ks, id, key, sp, r)
	if r != nil {
		if len(ks.deletes) == 16 {
			ks.deletes = ks.deletes[1:]
		}
		d := deleteFact{created: r.CreatedAt.UnixNano(), t0: sp.t0, t1: sp.t1, ack: sp.s1}
		ks.deletes = append(ks.deletes, d)
		if g := ks.gen(d.created); g != nil && d.created >= d.t0 {
			// A Reserve after the Delete may create a record with the same
			// CreatedAt.
			g.ambiguous = true
		}
	}
}

func (w *worker) batchReserve() {
	// The server sends distinct IDs in one batch.
	var items []storage.ReserveParams
	seen := map[storage.ID]bool{}
	for range 1 + w.rng.IntN(8) {
		if id := w.pickID(); !seen[id] {
			seen[id] = true
			items = append(items, w.reserveParams(id))
		}
	}
	var res []storage.ReserveResult
	var err error
	sp, t1 := w.call(func() { res, err = w.s.BatchReserve(w.ctx, items) })
	if err != nil || len(res) != len(items) {
		ks, unlock := w.ck.lock(ckey(items[0].ID))
		w.ck.fail(ks, ckey(items[0].ID), "BatchReserve of %d items = %d results, %v", len(items), len(res), err)
		unlock()
		return
	}
	for i, p := range items {
		w.reserved(sp, t1, p, res[i].Outcome, res[i].Record, res[i].Err, "BatchReserve")
	}
}

func (w *worker) batchComplete() {
	var items []storage.CompleteParams
	seen := map[storage.ID]bool{}
	for range 1 + w.rng.IntN(6) {
		if h, ok := w.takeHold(); ok && !seen[h.id] {
			seen[h.id] = true
			items = append(items, w.completeParams(h))
		}
	}
	if len(items) == 0 {
		return
	}
	var res []storage.CompleteResult
	var err error
	sp, t1 := w.call(func() { res, err = w.s.BatchComplete(w.ctx, items) })
	if err != nil || len(res) != len(items) {
		ks, unlock := w.ck.lock(ckey(items[0].ID))
		w.ck.fail(ks, ckey(items[0].ID), "BatchComplete of %d items = %d results, %v", len(items), len(res), err)
		unlock()
		return
	}
	for i, p := range items {
		w.completed(sp, t1, p, res[i].Record, res[i].Err, "BatchComplete")
	}
}

func (w *worker) list() {
	var recs []*storage.Record
	var err error
	sp, t1 := w.call(func() {
		recs, _, err = w.s.List(w.ctx, storage.ListParams{Tenant: stressTenant, Namespace: stressHotNS, Limit: 8})
	})
	if err != nil {
		ks, unlock := w.ck.lock("list")
		w.ck.fail(ks, "list", "List error = %v", err)
		unlock()
		return
	}
	for _, r := range recs {
		key := ckey(r.ID)
		ks, unlock := w.ck.lock(key)
		esp := w.ck.end(sp, t1)
		ks.note("List", esp, 0, brief(r))
		if r.Namespace != stressHotNS || r.Tenant != stressTenant {
			w.ck.fail(ks, key, "List answered %+v", r.ID)
		} else {
			// Only what List shows is an answer: keys it skipped say nothing.
			w.ck.observe(ks, r.ID, key, esp, r)
		}
		scribble(r)
		unlock()
	}
}
