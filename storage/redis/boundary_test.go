package redis

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/idemhq/idem/storage"
)

// TestExactBoundaries runs the scripts at the instant a lease or a record
// ends. Their now is Redis TIME plus the offset; these copies read TIME as
// zero, so the offset is the exact now. A lease ending now has ended
// (takeover); a record ending now is absent for every operation, as
// storage.Record.Live says. The conformance suite cannot hit these
// instants on Redis's clock.
func TestExactBoundaries(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	s := openTest(ctx, t, "")
	fixed := func(src string) *goredis.Script {
		return goredis.NewScript(strings.Replace(src, "redis.call('TIME')", "{0, 0}", 1))
	}
	// An hour ahead, so PXAT keeps the records in Redis meanwhile.
	t0 := time.Now().Add(time.Hour).UnixMicro()
	const lease, hold = int64(10e6), int64(20e6)
	id := testID("k")
	key := s.nsPrefix(id.Tenant, id.Namespace) + id.Key
	run := func(src string, now int64, args ...any) any {
		t.Helper()
		res, err := fixed(src).Run(ctx, s.c, []string{key}, append([]any{now}, args...)...).Result()
		if err != nil {
			t.Fatalf("script error = %v", err)
		}
		return res
	}
	reserve := func(now int64, fp string) (storage.Outcome, *storage.Record) {
		t.Helper()
		rows, ok := run(reserveSrc, now, fp, lease, hold).([]any)
		if !ok || len(rows) != 1 {
			t.Fatalf("reserve reply = %v", rows)
		}
		out, rec, err := parseReserve(id, rows[0])
		if err != nil {
			t.Fatalf("reserve: %v", err)
		}
		return out, rec
	}

	if out, _ := reserve(t0, "fp"); out != storage.OutcomeReserved {
		t.Fatalf("Reserve() = %v, want RESERVED", out)
	}
	if out, _ := reserve(t0+lease-1, "fp"); out != storage.OutcomeInProgress {
		t.Fatalf("Reserve() 1µs before the lease ends = %v, want IN_PROGRESS", out)
	}
	out, rec := reserve(t0+lease, "fp")
	if out != storage.OutcomeReserved || rec.Token != 2 {
		t.Fatalf("Reserve() at the lease end = %v token %d, want RESERVED token 2", out, rec.Token)
	}
	end := rec.ExpiresAt.UnixMicro() // t0 + lease + hold
	if _, err := recordOrErr(id, 0, run(lookupSrc, end-1)); err != nil {
		t.Fatalf("Lookup() 1µs before the record ends error = %v, want the record", err)
	}
	for _, op := range []struct {
		name string
		src  string
		args []any
	}{
		{"Lookup", lookupSrc, nil},
		{"Release", releaseSrc, []any{uint64(2)}},
		{"ExtendLease", extendSrc, []any{uint64(2), lease}},
		{"Checkpoint", checkpointSrc, []any{uint64(2), encodeCheckpoint(storage.Checkpoint{Phase: "p"})}},
		{"ForceRelease", forceReleaseSrc, nil},
	} {
		if _, err := recordOrErr(id, 2, run(op.src, end, op.args...)); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("%s() at the record end error = %v, want ErrNotFound", op.name, err)
		}
	}
	rows := run(completeSrc, end, uint64(2), encodeResult(nil), hold).([]any)
	if _, err := recordOrErr(id, 2, rows[0]); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Complete() at the record end error = %v, want ErrNotFound", err)
	}
	if out, rec := reserve(end, "other"); out != storage.OutcomeReserved || rec.Token != 1 {
		t.Errorf("Reserve() at the record end = %v token %d, want RESERVED token 1 (a new record)", out, rec.Token)
	}
}
