package server

import (
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/idemhq/idem/storage"
)

// notifier wakes the Reserve calls waiting on a record when a call through
// this Service moves it out of IN_PROGRESS. It holds one entry per record
// that has waiters and drops it with the last one, so its memory is
// bounded by the number of waiting calls (itself bounded by maxWaiters).
type notifier struct {
	subs   atomic.Int64 // outstanding subscriptions; 0 makes notify free
	seed   maphash.Seed
	shards [64]notifierShard
}

type notifierShard struct {
	mu sync.Mutex
	m  map[storage.ID]*waitEntry
}

type waitEntry struct {
	ch   chan struct{} // closed by notify
	refs int
}

func newNotifier() *notifier {
	n := &notifier{seed: maphash.MakeSeed()}
	for i := range n.shards {
		n.shards[i].m = make(map[storage.ID]*waitEntry)
	}
	return n
}

func (n *notifier) shard(id storage.ID) *notifierShard {
	var h maphash.Hash
	h.SetSeed(n.seed)
	h.WriteString(id.Tenant)
	h.WriteByte(0)
	h.WriteString(id.Namespace)
	h.WriteByte(0)
	h.WriteString(id.Key)
	return &n.shards[h.Sum64()%uint64(len(n.shards))]
}

// subscription is one waiter's interest in one record.
type subscription struct {
	n  *notifier
	sh *notifierShard
	id storage.ID
	e  *waitEntry
}

// subscribe must happen before the Reserve whose IN_PROGRESS answer makes
// the caller wait: a Complete that lands after that Reserve then finds
// the subscription, and one that landed before it made Reserve answer
// COMPLETED.
func (n *notifier) subscribe(id storage.ID) subscription {
	n.subs.Add(1)
	sh := n.shard(id)
	sh.mu.Lock()
	e := sh.m[id]
	if e == nil {
		e = &waitEntry{ch: make(chan struct{})}
		sh.m[id] = e
	}
	e.refs++
	sh.mu.Unlock()
	return subscription{n: n, sh: sh, id: id, e: e}
}

func (s subscription) done() <-chan struct{} { return s.e.ch }

func (s subscription) cancel() {
	s.sh.mu.Lock()
	s.e.refs--
	if s.e.refs == 0 && s.sh.m[s.id] == s.e {
		delete(s.sh.m, s.id)
	}
	s.sh.mu.Unlock()
	s.n.subs.Add(-1)
}

// notify wakes every waiter of id.
func (n *notifier) notify(id storage.ID) {
	if n.subs.Load() == 0 {
		return
	}
	sh := n.shard(id)
	sh.mu.Lock()
	if e := sh.m[id]; e != nil {
		close(e.ch)
		delete(sh.m, id)
	}
	sh.mu.Unlock()
}

// size is the number of records with waiters, for tests.
func (n *notifier) size() int {
	total := 0
	for i := range n.shards {
		sh := &n.shards[i]
		sh.mu.Lock()
		total += len(sh.m)
		sh.mu.Unlock()
	}
	return total
}

// reserve runs Reserve and, when the key is IN_PROGRESS and the caller
// asked to wait, waits for the record to leave that state: woken at once
// by a Complete or Release through this Service, and polling with
// exponential backoff (and at the lease's end, when a takeover becomes
// possible) for changes made by other replicas. When the wait ends it
// answers with the outcome at that moment.
func (s *Service) reserve(ctx context.Context, st boundedStore, p storage.ReserveParams, wait time.Duration) (storage.Outcome, *storage.Record, error) {
	if wait <= 0 {
		return st.Reserve(ctx, p)
	}
	if n := s.waiting.Add(1); n > int64(s.opts.maxWaiters) {
		s.waiting.Add(-1)
		return st.Reserve(ctx, p)
	}
	defer s.waiting.Add(-1)

	sub := s.notifier.subscribe(p.ID)
	out, rec, err := st.Reserve(ctx, p)
	if err != nil || out != storage.OutcomeInProgress {
		sub.cancel()
		return out, rec, err
	}

	// Stop a little before the caller's deadline, so it gets the outcome
	// rather than DEADLINE_EXCEEDED.
	wctx := ctx
	if dl, ok := ctx.Deadline(); ok {
		margin := min(time.Until(dl)/10, 50*time.Millisecond)
		var cancel context.CancelFunc
		wctx, cancel = context.WithDeadline(ctx, dl.Add(-margin))
		defer cancel()
	}
	clock := s.opts.clock
	end := clock.NewTimer(wait)
	defer end.Stop()
	backoff := s.opts.pollMin
	for {
		sleep := backoff
		if untilLease := rec.LeaseExpiresAt.Sub(clock.Now()); untilLease >= 0 && untilLease < sleep {
			sleep = untilLease + time.Millisecond
		}
		poll := clock.NewTimer(sleep)
		final := false
		select {
		case <-sub.done():
		case <-poll.Chan():
		case <-end.Chan():
			final = true
		case <-wctx.Done():
			final = true
		case <-s.done:
			final = true
		}
		poll.Stop()
		sub.cancel()
		if err := ctx.Err(); err != nil {
			return 0, nil, err
		}
		if !final {
			sub = s.notifier.subscribe(p.ID)
		}
		// A policy reload may have moved the namespace meanwhile: the old
		// store is out of reach, and a takeover there would hold a key no
		// one else sees.
		st = s.routed(p.ID)
		out, rec, err = st.Reserve(ctx, p)
		if final || err != nil || out != storage.OutcomeInProgress {
			if !final {
				sub.cancel()
			}
			return out, rec, err
		}
		backoff = min(2*backoff, s.opts.pollMax)
	}
}

// routed is the store id's namespace is routed to now.
func (s *Service) routed(id storage.ID) boundedStore {
	st, _ := s.resolver.Resolve(id.Tenant, id.Namespace)
	if st == nil {
		st = s.store
	}
	return s.bounded(st)
}
