package storagetest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

const (
	racers     = 64
	raceRounds = 8
)

// oneWinner races racers Reserves of one key and wants exactly one
// RESERVED (with token want) and IN_PROGRESS for every other.
func oneWinner(t *testing.T, e *env, id storage.ID, want uint64) {
	t.Helper()
	var reserved, inProgress atomic.Int32
	errs := make(chan error, racers)
	parallel(racers, func(int) {
		out, rec, err := e.s.Reserve(e.ctx, rp(id, "fp", ttl, retention))
		switch {
		case err != nil:
			errs <- fmt.Errorf("Reserve(%s) error = %v", id.Key, err)
		case rec == nil || rec.Token != want || rec.State != storage.StateInProgress:
			errs <- fmt.Errorf("Reserve(%s) = %v %+v, want an IN_PROGRESS record with token %d", id.Key, out, rec, want)
		case out == storage.OutcomeReserved:
			reserved.Add(1)
		case out == storage.OutcomeInProgress:
			inProgress.Add(1)
		default:
			errs <- fmt.Errorf("Reserve(%s) outcome = %v, want RESERVED or IN_PROGRESS", id.Key, out)
		}
	})
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if reserved.Load() != 1 || inProgress.Load() != racers-1 {
		t.Fatalf("Reserve(%s) by %d goroutines: %d RESERVED, %d IN_PROGRESS; want 1 and %d", id.Key, racers, reserved.Load(), inProgress.Load(), racers-1)
	}
}

func testRace(t *testing.T, h Harness) {
	// Several rounds on fresh keys, since a backend's race window (e.g. a
	// SQL statement whose snapshot predates a concurrent insert) is hit
	// only by some interleavings.
	t.Run("OneKeyOneWinner", func(t *testing.T) {
		e := newEnv(t, h)
		for round := range raceRounds {
			oneWinner(t, e, e.id(fmt.Sprint("k", round)), 1)
		}
	})

	t.Run("ExpiredLeaseOneTakeover", func(t *testing.T) {
		e := newEnv(t, h)
		for round := range raceRounds {
			id := e.id(fmt.Sprint("k", round))
			e.mustReserve(rp(id, "fp", time.Second, retention), storage.OutcomeReserved)
		}
		e.advance(2 * time.Second)
		for round := range raceRounds {
			oneWinner(t, e, e.id(fmt.Sprint("k", round)), 2)
		}
	})

	t.Run("ReleasedOneTakeover", func(t *testing.T) {
		e := newEnv(t, h)
		for round := range raceRounds {
			id := e.id(fmt.Sprint("k", round))
			e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
			e.release(id, 1)
			oneWinner(t, e, id, 2)
		}
	})

	t.Run("ExpiredRecordOneCreator", func(t *testing.T) {
		e := newEnv(t, h)
		for round := range raceRounds {
			id := e.id(fmt.Sprint("k", round))
			e.mustReserve(rp(id, "fp", time.Second, time.Second), storage.OutcomeReserved)
			e.complete(id, 1, nil, time.Second)
		}
		e.advance(2 * time.Second)
		for round := range raceRounds {
			oneWinner(t, e, e.id(fmt.Sprint("k", round)), 1)
		}
	})

	t.Run("DistinctKeysAllWin", func(t *testing.T) {
		e := newEnv(t, h)
		errs := make(chan error, racers)
		parallel(racers, func(i int) {
			out, rec, err := e.s.Reserve(e.ctx, rp(e.id(fmt.Sprint("k", i)), "fp", ttl, retention))
			if err != nil || out != storage.OutcomeReserved || rec == nil || rec.Token != 1 {
				errs <- fmt.Errorf("Reserve(k%d) = %v, %+v, %v; want RESERVED token 1", i, out, rec, err)
			}
		})
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	})

	t.Run("CompleteVsTakeoverOneWinner", func(t *testing.T) {
		e := newEnv(t, h)
		for round := range raceRounds {
			e.mustReserve(rp(e.id(fmt.Sprint("k", round)), "fp", ttl, retention), storage.OutcomeReserved)
		}
		e.advance(ttl + time.Second)
		for round := range raceRounds {
			completeVsTakeover(t, e, e.id(fmt.Sprint("k", round)))
		}
	})

	t.Run("MixedOpsTokensNeverShared", func(t *testing.T) { mixedOps(t, h) })

	t.Run("SameCompleteConcurrently", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		var failed atomic.Int32
		parallel(racers, func(int) {
			if _, err := e.s.Complete(e.ctx, storage.CompleteParams{ID: id, Token: 1, Result: bigResult("same"), Retention: retention}); err != nil {
				failed.Add(1)
			}
		})
		if n := failed.Load(); n != 0 {
			t.Fatalf("Complete() retried by %d goroutines: %d failed, want 0", racers, n)
		}
	})

	t.Run("DifferentCompletesOneWinner", func(t *testing.T) {
		// One holder's Complete retried with different results (a buggy
		// caller): exactly one result is stored, the others are refused.
		e := newEnv(t, h)
		id := e.id("k")
		e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		var (
			mu       sync.Mutex
			winners  []*storage.Result
			problems []error
		)
		parallel(racers, func(i int) {
			res := &storage.Result{Body: []byte(fmt.Sprint("r", i))}
			rec, err := e.s.Complete(e.ctx, storage.CompleteParams{ID: id, Token: 1, Result: res, Retention: retention})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && (rec == nil || !rec.Result.Equal(res)):
				problems = append(problems, fmt.Errorf("Complete(r%d) record = %+v, want its own result", i, rec))
			case err == nil:
				winners = append(winners, res)
			case !errors.Is(err, storage.ErrLeaseLost):
				problems = append(problems, fmt.Errorf("Complete(r%d) error = %v, want nil or ErrLeaseLost", i, err))
			}
		})
		for _, err := range problems {
			t.Error(err)
		}
		if len(winners) != 1 {
			t.Fatalf("Complete() with %d different results: %d succeeded, want 1", racers, len(winners))
		}
		if got := e.lookup(id); got.State != storage.StateCompleted || !got.Result.Equal(winners[0]) {
			t.Fatalf("Lookup() = %v body %q, want COMPLETED with the winner's %q", got.State, got.Result.Body, winners[0].Body)
		}
	})

	t.Run("SameReleaseConcurrently", func(t *testing.T) {
		e := newEnv(t, h)
		id := e.id("k")
		first := e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
		var failed atomic.Int32
		parallel(racers, func(int) {
			if rec, err := e.s.Release(e.ctx, id, 1); err != nil || rec == nil || rec.State != storage.StateReleased {
				failed.Add(1)
			}
		})
		if n := failed.Load(); n != 0 {
			t.Fatalf("Release() retried by %d goroutines: %d failed or did not answer RELEASED, want 0", racers, n)
		}
		want := first.Clone()
		want.State = storage.StateReleased
		want.LeaseExpiresAt = e.lookup(id).LeaseExpiresAt
		e.wantUnchanged(want)
	})

	t.Run("ExtendVsTakeoverOneWinner", func(t *testing.T) {
		// The expired holder's ExtendLease races takeovers: once it extends,
		// the lease is live and nobody may take over; once taken over, it
		// must not extend the new holder's lease. Few extenders: a holder
		// heartbeats alone, and every ExtendLease writes, so dozens on one
		// row only measure a SQL store's retry budget at strict isolation.
		e := newEnv(t, h)
		for round := range raceRounds {
			e.mustReserve(rp(e.id(fmt.Sprint("k", round)), "fp", ttl, retention), storage.OutcomeReserved)
		}
		e.advance(ttl + time.Second)
		for round := range raceRounds {
			id := e.id(fmt.Sprint("k", round))
			var extended, takeovers atomic.Int32
			var mu sync.Mutex
			var problems []error
			parallel(racers, func(i int) {
				if i%16 == 0 {
					rec, err := e.s.ExtendLease(e.ctx, id, 1, time.Hour)
					switch {
					case err == nil && (rec == nil || rec.Token != 1):
						mu.Lock()
						problems = append(problems, fmt.Errorf("ExtendLease(token 1) record = %+v, want token 1", rec))
						mu.Unlock()
					case err == nil:
						extended.Add(1)
					case !errors.Is(err, storage.ErrLeaseLost):
						mu.Lock()
						problems = append(problems, fmt.Errorf("ExtendLease(token 1) error = %v, want nil or ErrLeaseLost", err))
						mu.Unlock()
					}
					return
				}
				out, _, err := e.s.Reserve(e.ctx, rp(id, "fp", ttl, retention))
				switch {
				case err != nil:
					mu.Lock()
					problems = append(problems, fmt.Errorf("Reserve() error = %v", err))
					mu.Unlock()
				case out == storage.OutcomeReserved:
					takeovers.Add(1)
				}
			})
			for _, err := range problems {
				t.Error(err)
			}
			if t.Failed() {
				t.FailNow()
			}
			ext, tk := extended.Load(), takeovers.Load()
			got := e.lookup(id)
			switch {
			case tk > 1:
				t.Fatalf("Reserve(%s) takeovers = %d, want at most 1", id.Key, tk)
			case tk == 1 && ext > 0:
				t.Fatalf("Reserve(%s) took over and ExtendLease(token 1) succeeded %d times, want one or the other", id.Key, ext)
			case tk == 0 && ext == 0:
				t.Fatalf("Reserve(%s): no takeover and no ExtendLease succeeded, want one or the other", id.Key)
			case got.Token != uint64(1+tk):
				t.Fatalf("Lookup(%s) token = %d, want %d", id.Key, got.Token, 1+tk)
			}
		}
	})

	t.Run("ListPagesWhileWriting", func(t *testing.T) {
		// Pages walked while keys between the pages' keys come and go, and
		// the walked records themselves change state: every record that
		// existed throughout is listed exactly once, in key order.
		e := newEnv(t, h)
		const stable = 40
		for i := range stable {
			e.mustReserve(rp(e.id(fmt.Sprintf("s%03d", i)), "fp", ttl, retention), storage.OutcomeReserved)
		}
		done := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		var problems []error
		var writes atomic.Int64
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(w), 7))
				for n := 0; ; n++ {
					select {
					case <-done:
						return
					default:
					}
					i := rng.IntN(stable)
					var err error
					switch rng.IntN(5) {
					case 0, 1: // a key before, between or after the stable ones
						_, _, err = e.s.Reserve(e.ctx, rp(e.id(fmt.Sprintf("s%03d-%d", i-1+rng.IntN(3), rng.IntN(4))), "fp", ttl, retention))
					case 2:
						_, err = e.s.Delete(e.ctx, e.id(fmt.Sprintf("s%03d-%d", i, rng.IntN(4))))
					case 3:
						_, err = e.s.Checkpoint(e.ctx, e.id(fmt.Sprintf("s%03d", i)), 1, storage.Checkpoint{Phase: fmt.Sprint(n)})
					default:
						_, err = e.s.Complete(e.ctx, storage.CompleteParams{ID: e.id(fmt.Sprintf("s%03d", i)), Token: 1, Result: &storage.Result{}, Retention: retention})
					}
					if err != nil && !errors.Is(err, storage.ErrNotFound) && !errors.Is(err, storage.ErrLeaseLost) {
						mu.Lock()
						problems = append(problems, err)
						mu.Unlock()
					}
					writes.Add(1)
				}
			}()
		}
		for round := range 5 {
			// Each round starts once the writers have moved on.
			for writes.Load() < int64(50*round) && e.ctx.Err() == nil {
				runtime.Gosched()
			}
			var got []string
			p := storage.ListParams{Tenant: e.tenant, Namespace: e.ns, Limit: 1 + round}
			for pages := 0; ; pages++ {
				recs, more, err := e.s.List(e.ctx, p)
				if err != nil {
					t.Fatalf("List(%+v) error = %v", p, err)
				}
				for _, r := range recs {
					got = append(got, r.Key)
				}
				if !more || pages > 10*stable {
					break
				}
				p.After = recs[len(recs)-1].Key
			}
			var seen []string
			for i, k := range got {
				if i > 0 && k <= got[i-1] {
					t.Fatalf("round %d: List pages = %q: %q after %q, want strictly increasing keys", round, got, k, got[i-1])
				}
				if len(k) == 4 {
					seen = append(seen, k)
				}
			}
			if len(seen) != stable {
				t.Fatalf("round %d: List pages hold %d of the %d records that existed throughout: %q", round, len(seen), stable, seen)
			}
		}
		close(done)
		wg.Wait()
		for _, err := range problems {
			t.Error(err)
		}
	})

	t.Run("OverlappingBatchesAndSingles", func(t *testing.T) {
		e := newEnv(t, h)
		const (
			batches = 16
			size    = 100
			keys    = 400
		)
		var mu sync.Mutex
		wins := map[string]int{}
		var problems []error
		// Besides the batches, single Reserves race over every key.
		const singles = 4
		parallel(batches+singles, func(b int) {
			if b >= batches {
				w := b - batches
				for i := range keys / singles {
					k := w*keys/singles + (i*37)%(keys/singles)
					id := e.id(fmt.Sprintf("k%03d", k))
					out, _, err := e.s.Reserve(e.ctx, rp(id, "fp", ttl, retention))
					mu.Lock()
					switch {
					case err != nil:
						problems = append(problems, fmt.Errorf("Reserve(%s) error = %v", id.Key, err))
					case out == storage.OutcomeReserved:
						wins[id.Key]++
					case out != storage.OutcomeInProgress:
						problems = append(problems, fmt.Errorf("Reserve(%s) outcome = %v, want RESERVED or IN_PROGRESS", id.Key, out))
					}
					mu.Unlock()
				}
				return
			}
			items := make([]storage.ReserveParams, size)
			for i := range items {
				// Each batch walks a window of the key space, half of them backwards,
				// so batches overlap in both orders.
				k := (b*keys/batches + i) % keys
				if b%2 == 1 {
					k = (b*keys/batches + size - 1 - i) % keys
				}
				items[i] = rp(e.id(fmt.Sprintf("k%03d", k)), "fp", ttl, retention)
			}
			res, err := e.s.BatchReserve(e.ctx, items)
			mu.Lock()
			defer mu.Unlock()
			if err != nil || len(res) != size {
				problems = append(problems, fmt.Errorf("BatchReserve() = %d results, %v; want %d, nil", len(res), err, size))
				return
			}
			for i, r := range res {
				switch {
				case r.Err != nil:
					problems = append(problems, fmt.Errorf("BatchReserve() item %s error = %v", items[i].Key, r.Err))
				case r.Outcome == storage.OutcomeReserved:
					wins[items[i].Key]++
				case r.Outcome != storage.OutcomeInProgress:
					problems = append(problems, fmt.Errorf("BatchReserve() item %s outcome = %v, want RESERVED or IN_PROGRESS", items[i].Key, r.Outcome))
				}
			}
		})
		for _, err := range problems {
			t.Error(err)
		}
		for k, n := range wins {
			if n != 1 {
				t.Errorf("key %s RESERVED %d times, want 1", k, n)
			}
		}
		if want := min(keys, batches*size); len(wins) != want {
			t.Errorf("keys RESERVED = %d, want %d", len(wins), want)
		}
	})
}

func testClose(t *testing.T, h Harness) {
	e := newEnv(t, h)
	id := e.id("k")
	if err := e.s.Ping(e.ctx); err != nil {
		t.Fatalf("Ping() before Close error = %v, want nil", err)
	}
	e.mustReserve(rp(id, "fp", ttl, retention), storage.OutcomeReserved)
	e.closed = true
	if err := e.s.Close(); err != nil {
		t.Fatalf("Close() error = %v, want nil", err)
	}
	if err := e.s.Close(); err != nil && !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("second Close() error = %v, want nil or ErrClosed", err)
	}
	for _, op := range []struct {
		name string
		call func() error
	}{
		{"Ping", func() error { return e.s.Ping(e.ctx) }},
		{"Reserve", func() error { _, _, err := e.s.Reserve(e.ctx, rp(id, "fp", ttl, retention)); return err }},
		{"Complete", func() error {
			_, err := e.s.Complete(e.ctx, storage.CompleteParams{ID: id, Token: 1, Retention: retention})
			return err
		}},
		{"Release", func() error { _, err := e.s.Release(e.ctx, id, 1); return err }},
		{"ExtendLease", func() error { _, err := e.s.ExtendLease(e.ctx, id, 1, ttl); return err }},
		{"Checkpoint", func() error { _, err := e.s.Checkpoint(e.ctx, id, 1, storage.Checkpoint{}); return err }},
		{"Lookup", func() error { _, err := e.s.Lookup(e.ctx, id); return err }},
		{"BatchReserve", func() error {
			_, err := e.s.BatchReserve(e.ctx, []storage.ReserveParams{rp(id, "fp", ttl, retention)})
			return err
		}},
		{"BatchComplete", func() error {
			_, err := e.s.BatchComplete(e.ctx, []storage.CompleteParams{{ID: id, Token: 1, Retention: retention}})
			return err
		}},
		{"Delete", func() error { _, err := e.s.Delete(e.ctx, id); return err }},
		{"ForceRelease", func() error { _, err := e.s.ForceRelease(e.ctx, id); return err }},
		{"List", func() error {
			_, _, err := e.s.List(e.ctx, storage.ListParams{Tenant: e.tenant, Namespace: e.ns, Limit: 10})
			return err
		}},
		{"Stats", func() error { _, err := e.s.Stats(e.ctx, e.tenant, ""); return err }},
	} {
		t.Run(op.name, func(t *testing.T) {
			wantErr(t, op.name+" after Close", op.call(), storage.ErrClosed)
		})
	}
}

// completeVsTakeover races the expired holder's Complete (token 1) against
// takeovers of id and wants exactly one winner: either token 1 completed
// and nobody took over, or one takeover happened and its holder completed.
func completeVsTakeover(t *testing.T, e *env, id storage.ID) {
	t.Helper()
	var takeovers atomic.Int32
	var (
		mu       sync.Mutex
		winners  = map[uint64]*storage.Result{} // token → result of a successful Complete
		problems []error
	)
	fail := func(err error) {
		mu.Lock()
		problems = append(problems, err)
		mu.Unlock()
	}
	win := func(tok uint64, res *storage.Result) {
		mu.Lock()
		winners[tok] = res
		mu.Unlock()
	}
	complete := func(tok uint64, res *storage.Result) {
		rec, err := e.s.Complete(e.ctx, storage.CompleteParams{ID: id, Token: tok, Result: res, Retention: retention})
		switch {
		case err == nil:
			if rec == nil || rec.Token != tok || !rec.Result.Equal(res) {
				fail(fmt.Errorf("Complete(token %d) record = %+v, want its own token and result", tok, rec))
			}
			win(tok, res)
		case !errors.Is(err, storage.ErrLeaseLost):
			fail(fmt.Errorf("Complete(token %d) error = %v, want nil or ErrLeaseLost", tok, err))
		}
	}
	parallel(racers, func(i int) {
		if i%2 == 0 {
			// The expired holder finishing late.
			complete(1, &storage.Result{Body: []byte("holder-1")})
			return
		}
		out, rec, err := e.s.Reserve(e.ctx, rp(id, "fp", ttl, retention))
		if err != nil {
			fail(fmt.Errorf("Reserve() error = %v", err))
			return
		}
		switch out {
		case storage.OutcomeReserved:
			takeovers.Add(1)
			complete(rec.Token, &storage.Result{Body: []byte(fmt.Sprint("holder-", rec.Token))})
		case storage.OutcomeInProgress, storage.OutcomeCompleted:
		default:
			fail(fmt.Errorf("Reserve() outcome = %v, want RESERVED, IN_PROGRESS or COMPLETED", out))
		}
	})
	for _, err := range problems {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	if n := takeovers.Load(); n > 1 {
		t.Fatalf("Reserve() takeovers = %d, want at most 1", n)
	}
	if len(winners) != 1 {
		t.Fatalf("Complete() winners = %v, want exactly one token", winners)
	}
	for tok, res := range winners {
		if takeovers.Load() == 1 && tok == 1 {
			t.Fatalf("Complete(token 1) succeeded although a takeover happened")
		}
		got := e.lookup(id)
		if got.State != storage.StateCompleted || got.Token != tok || !got.Result.Equal(res) {
			t.Fatalf("Lookup() = %v token %d result %q, want COMPLETED token %d result %q", got.State, got.Token, got.Result.Body, tok, res.Body)
		}
	}
}

// mixedOps hammers a few keys with Reserve, Complete, Release, Checkpoint
// and clock moves from many goroutines, then checks the invariants that
// make fencing work: per key, the RESERVED tokens are exactly 1..n, each
// handed to one caller; at most one token completes; the stored record
// ends with the highest token and, if completed, the winner's result.
func mixedOps(t *testing.T, h Harness) {
	e := newEnv(t, h)
	const (
		keys    = 8
		workers = 32
		iters   = 40
	)
	type tokenKey struct {
		key   string
		token uint64
	}
	var (
		mu       sync.Mutex
		holders  = map[tokenKey]int{}                      // → worker that got RESERVED
		wins     = map[string]map[uint64]*storage.Result{} // key → token → result completed
		problems []error
	)
	fail := func(err error) {
		mu.Lock()
		problems = append(problems, err)
		mu.Unlock()
	}
	parallel(workers, func(w int) {
		rng := rand.New(rand.NewPCG(uint64(w), 42))
		for range iters {
			id := e.id(fmt.Sprint("k", rng.IntN(keys)))
			if rng.IntN(8) == 0 {
				e.clock.Advance(10 * time.Second)
			}
			out, rec, err := e.s.Reserve(e.ctx, rp(id, "fp", ttl, retention))
			if err != nil || rec == nil {
				fail(fmt.Errorf("Reserve(%s) = %v, %+v, %v", id.Key, out, rec, err))
				return
			}
			if out != storage.OutcomeReserved {
				continue
			}
			mu.Lock()
			tk := tokenKey{id.Key, rec.Token}
			if prev, dup := holders[tk]; dup {
				problems = append(problems, fmt.Errorf("Reserve(%s) token %d RESERVED by workers %d and %d", id.Key, rec.Token, prev, w))
			}
			holders[tk] = w
			mu.Unlock()
			switch rng.IntN(4) {
			case 0: // finish
				res := &storage.Result{Body: []byte(fmt.Sprintf("%s-%d", id.Key, rec.Token))}
				_, err := e.s.Complete(e.ctx, storage.CompleteParams{ID: id, Token: rec.Token, Result: res, Retention: retention})
				switch {
				case err == nil:
					mu.Lock()
					if wins[id.Key] == nil {
						wins[id.Key] = map[uint64]*storage.Result{}
					}
					wins[id.Key][rec.Token] = res
					mu.Unlock()
				case !errors.Is(err, storage.ErrLeaseLost):
					fail(fmt.Errorf("Complete(%s, token %d) error = %v, want nil or ErrLeaseLost", id.Key, rec.Token, err))
				}
			case 1, 2: // fail and hand the key on
				if _, err := e.s.Release(e.ctx, id, rec.Token); err != nil && !errors.Is(err, storage.ErrLeaseLost) {
					fail(fmt.Errorf("Release(%s, token %d) error = %v, want nil or ErrLeaseLost", id.Key, rec.Token, err))
				}
			default: // report progress, then stall until the lease runs out
				if _, err := e.s.Checkpoint(e.ctx, id, rec.Token, storage.Checkpoint{Phase: fmt.Sprint(rec.Token)}); err != nil && !errors.Is(err, storage.ErrLeaseLost) {
					fail(fmt.Errorf("Checkpoint(%s, token %d) error = %v, want nil or ErrLeaseLost", id.Key, rec.Token, err))
				}
			}
		}
	})
	for _, err := range problems {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	for k := range keys {
		key := fmt.Sprint("k", k)
		var max uint64
		for tk := range holders {
			if tk.key == key && tk.token > max {
				max = tk.token
			}
		}
		if max == 0 {
			continue
		}
		for tok := uint64(1); tok <= max; tok++ {
			if _, ok := holders[tokenKey{key, tok}]; !ok {
				t.Errorf("key %s: token %d never RESERVED although token %d was", key, tok, max)
			}
		}
		if len(wins[key]) > 1 {
			t.Errorf("key %s: tokens %v all completed, want at most one", key, wins[key])
		}
		got := e.lookup(e.id(key))
		if got.Token != max {
			t.Errorf("Lookup(%s) token = %d, want the last RESERVED token %d", key, got.Token, max)
		}
		for tok, res := range wins[key] {
			if got.State != storage.StateCompleted || got.Token != tok || !got.Result.Equal(res) {
				t.Errorf("Lookup(%s) = %v token %d body %q, want COMPLETED by token %d with %q", key, got.State, got.Token, got.Result.Body, tok, res.Body)
			}
		}
		if len(wins[key]) == 0 && got.State == storage.StateCompleted {
			t.Errorf("Lookup(%s) = COMPLETED by token %d, but no Complete succeeded", key, got.Token)
		}
	}
}
