package storagetest_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/memory"
	"github.com/idemhq/idem/storage/storagetest"
)

// The suite is only worth something if it fails broken backends. Each
// mutant below wraps the memory backend and breaks one rule; the test runs
// the suite against it in a child process and wants it to fail in the
// group that owns the rule.

const mutantEnv = "IDEM_STORAGETEST_MUTANT"

type mutant struct {
	storage.Store
	name  string
	clock clockwork.Clock
}

func (m *mutant) Reserve(ctx context.Context, p storage.ReserveParams) (storage.Outcome, *storage.Record, error) {
	switch m.name {
	case "reserve-ignores-fingerprint":
		if cur, err := m.Store.Lookup(ctx, p.ID); err == nil {
			p.Fingerprint = cur.Fingerprint
		}
	case "empty-fingerprint-matches-any":
		if cur, err := m.Store.Lookup(ctx, p.ID); err == nil && len(cur.Fingerprint) == 0 {
			p.Fingerprint = nil
		}
	case "reserve-not-atomic":
		if _, err := m.Store.Lookup(ctx, p.ID); errors.Is(err, storage.ErrNotFound) {
			runtime.Gosched()
			m.Store.Delete(ctx, p.ID) // "insert or overwrite"
		}
	}
	out, rec, err := m.Store.Reserve(ctx, p)
	if m.name == "takeover-drops-checkpoint" && err == nil && out == storage.OutcomeReserved && rec.Token > 1 {
		rec, err = m.Store.Checkpoint(ctx, p.ID, rec.Token, storage.Checkpoint{})
	}
	return out, rec, err
}

func (m *mutant) Complete(ctx context.Context, p storage.CompleteParams) (*storage.Record, error) {
	switch m.name {
	case "complete-ignores-token":
		if cur, err := m.Store.Lookup(ctx, p.ID); err == nil {
			p.Token = cur.Token
		}
	case "complete-ignores-retention":
		p.Retention += time.Hour
	case "complete-holds-lease":
		if cur, err := m.Store.Lookup(ctx, p.ID); err == nil {
			p.Retention = max(p.Retention, cur.LeaseExpiresAt.Sub(m.clock.Now()))
		}
	case "complete-completed-any-token":
		if cur, err := m.Store.Lookup(ctx, p.ID); err == nil && cur.State == storage.StateCompleted && cur.Result.Equal(p.Result) {
			return cur, nil
		}
	case "complete-nil-differs-from-empty":
		if cur, err := m.Store.Lookup(ctx, p.ID); err == nil && cur.State == storage.StateCompleted && cur.Token == p.Token &&
			!reflect.DeepEqual(cur.Result, p.Result) {
			return nil, storage.ErrLeaseLost
		}
	case "complete-compares-concatenated":
		if cur, err := m.Store.Lookup(ctx, p.ID); err == nil && cur.State == storage.StateCompleted && cur.Token == p.Token &&
			concat(cur.Result) == concat(p.Result) {
			return cur, nil
		}
	}
	return m.Store.Complete(ctx, p)
}

// concat is a result encoding without lengths or separators.
func concat(r *storage.Result) string {
	if r == nil {
		r = &storage.Result{}
	}
	s := fmt.Sprint(r.Code) + r.Message + string(r.Body)
	for _, d := range r.Details {
		s += d.TypeURL + string(d.Value)
	}
	for _, k := range slices.Sorted(maps.Keys(r.Metadata)) {
		s += k + r.Metadata[k]
	}
	return s
}

func (m *mutant) Release(ctx context.Context, id storage.ID, token uint64) (*storage.Record, error) {
	if m.name == "release-released-any-token" {
		if rec, err := m.Store.Lookup(ctx, id); err == nil && rec.State == storage.StateReleased {
			return rec, nil
		}
	}
	if m.name == "release-keeps-lease" {
		rec, err := m.Store.Lookup(ctx, id)
		if err == nil && rec.Token != token {
			return nil, storage.ErrLeaseLost
		}
		return rec, err
	}
	return m.Store.Release(ctx, id, token)
}

func (m *mutant) ExtendLease(ctx context.Context, id storage.ID, token uint64, ttl time.Duration) (*storage.Record, error) {
	if m.name == "extend-doubles-ttl" {
		ttl *= 2
	}
	if m.name == "extend-never-shortens" {
		if cur, err := m.Store.Lookup(ctx, id); err == nil {
			ttl = max(ttl, cur.LeaseExpiresAt.Sub(m.clock.Now()))
		}
	}
	return m.Store.ExtendLease(ctx, id, token, ttl)
}

func (m *mutant) Checkpoint(ctx context.Context, id storage.ID, token uint64, cp storage.Checkpoint) (*storage.Record, error) {
	if m.name == "checkpoint-empty-is-none" && cp.Phase == "" && len(cp.Data) == 0 {
		return m.Store.Lookup(ctx, id)
	}
	rec, err := m.Store.Checkpoint(ctx, id, token, cp)
	if m.name == "checkpoint-renews-lease" && err == nil {
		return m.Store.ExtendLease(ctx, id, token, time.Minute)
	}
	return rec, err
}

func (m *mutant) Lookup(ctx context.Context, id storage.ID) (*storage.Record, error) {
	rec, err := m.Store.Lookup(ctx, id)
	if m.name == "lookup-takes-over" && err == nil && rec.State == storage.StateInProgress && !rec.LeaseExpiresAt.After(m.clock.Now()) {
		_, rec, err = m.Store.Reserve(ctx, storage.ReserveParams{ID: id, Fingerprint: rec.Fingerprint, LeaseTTL: time.Minute, Retention: time.Minute})
	}
	return rec, err
}

func (m *mutant) BatchReserve(ctx context.Context, items []storage.ReserveParams) ([]storage.ReserveResult, error) {
	res, err := m.Store.BatchReserve(ctx, items)
	if m.name == "batch-reversed" {
		slices.Reverse(res)
	}
	if m.name == "batch-repeats-answer-first" && err == nil {
		first := map[storage.ID]int{}
		for i, p := range items {
			if j, ok := first[p.ID]; ok {
				res[i] = res[j]
			} else {
				first[p.ID] = i
			}
		}
	}
	if m.name == "batch-takeover-drops-checkpoint" {
		for i, r := range res {
			if r.Err == nil && r.Outcome == storage.OutcomeReserved && r.Record.Token > 1 {
				res[i].Record, res[i].Err = m.Store.Checkpoint(ctx, items[i].ID, r.Record.Token, storage.Checkpoint{})
			}
		}
	}
	return res, err
}

func (m *mutant) BatchComplete(ctx context.Context, items []storage.CompleteParams) ([]storage.CompleteResult, error) {
	res, err := m.Store.BatchComplete(ctx, items)
	if m.name == "batch-item-error-fails-call" {
		for _, r := range res {
			if r.Err != nil {
				return nil, r.Err
			}
		}
	}
	return res, err
}

func (m *mutant) List(ctx context.Context, p storage.ListParams) ([]*storage.Record, bool, error) {
	recs, more, err := m.Store.List(ctx, p)
	if m.name == "list-unsorted" {
		slices.Reverse(recs)
	}
	return recs, more, err
}

func (m *mutant) Stats(ctx context.Context, tenant, namespace string) ([]storage.StatsRow, error) {
	if m.name == "stats-ignores-namespace" {
		namespace = ""
	}
	return m.Store.Stats(ctx, tenant, namespace)
}

func (m *mutant) Close() error {
	if m.name == "close-is-noop" {
		return nil
	}
	return m.Store.Close()
}

type mutantHarness struct{ name string }

func (h mutantHarness) MakeStore(ctx context.Context, t *testing.T) (storage.Store, storagetest.Clock) {
	clock := clockwork.NewFakeClock()
	s := memory.New(memory.WithClock(clock), memory.WithSweepInterval(0))
	if h.name == "close-is-noop" {
		t.Cleanup(func() { s.Close() })
	}
	return &mutant{Store: s, name: h.name, clock: clock}, clock
}

// TestMutantChild runs the suite against one mutant; only as a child of
// TestSuiteFailsMutants.
func TestMutantChild(t *testing.T) {
	name := os.Getenv(mutantEnv)
	if name == "" {
		t.Skip("runs only as a child process of TestSuiteFailsMutants")
	}
	storagetest.RunConformanceTests(t, mutantHarness{name})
}

func TestSuiteFailsMutants(t *testing.T) {
	for _, tc := range []struct {
		mutant string
		group  string // a subtest that must fail
	}{
		{"reserve-ignores-fingerprint", "TestMutantChild/Reserve/Mismatch"},
		{"reserve-not-atomic", "TestMutantChild/Race"},
		{"takeover-drops-checkpoint", "TestMutantChild/Checkpoint/SurvivesTakeover"},
		{"complete-ignores-token", "TestMutantChild/Fencing"},
		{"complete-ignores-retention", "TestMutantChild/Complete/Success"},
		{"complete-compares-concatenated", "TestMutantChild/Complete/DifferentResultIsLeaseLost/MetadataBoundary"},
		{"release-released-any-token", "TestMutantChild/Release/WrongTokenOnReleasedIsLeaseLost"},
		{"batch-takeover-drops-checkpoint", "TestMutantChild/Batch/ReserveMatchesSingle"},
		{"release-keeps-lease", "TestMutantChild/Release/Success"},
		{"extend-doubles-ttl", "TestMutantChild/ExtendLease/Success"},
		{"batch-reversed", "TestMutantChild/Batch/ReserveMixedOutcomesInOrder"},
		{"batch-item-error-fails-call", "TestMutantChild/Batch/CompletePerItemErrors"},
		{"list-unsorted", "TestMutantChild/Admin/List"},
		{"stats-ignores-namespace", "TestMutantChild/Admin/Stats"},
		{"close-is-noop", "TestMutantChild/Close"},
		{"empty-fingerprint-matches-any", "TestMutantChild/Reserve/EmptyStoredFingerprintIsMismatch"},
		{"complete-holds-lease", "TestMutantChild/Complete/ExpiresAtFromNowNotLease"},
		{"complete-completed-any-token", "TestMutantChild/Complete/OtherTokenOnCompletedIsLeaseLost"},
		{"complete-nil-differs-from-empty", "TestMutantChild/Complete/RetryWithEquivalentResult"},
		{"extend-never-shortens", "TestMutantChild/ExtendLease/SetsLeaseFromNow"},
		{"checkpoint-empty-is-none", "TestMutantChild/Checkpoint/EmptyCheckpointReplacesAndSurvives"},
		{"checkpoint-renews-lease", "TestMutantChild/Checkpoint/AfterLeaseExpiryDoesNotRenewLease"},
		{"lookup-takes-over", "TestMutantChild/Lookup/LeaseExpiredIsNoTakeover"},
		{"batch-repeats-answer-first", "TestMutantChild/Batch/ReserveDuplicateKeys"},
	} {
		t.Run(tc.mutant, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestMutantChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), mutantEnv+"="+tc.mutant)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("suite against mutant %s: error = %v, want a failing run\n%s", tc.mutant, err, out)
			}
			if !strings.Contains(string(out), "--- FAIL: "+tc.group) {
				t.Fatalf("suite against mutant %s did not fail %s:\n%s", tc.mutant, tc.group, out)
			}
		})
	}
}
