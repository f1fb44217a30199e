package reliability

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/idemhq/idem/reliability/harness"
)

// workload is the mixed load of the linearizability tests: 16 clients and 8
// live keys; a few hundred calls in short mode.
func workload(prefix string) harness.Workload {
	w := harness.Workload{Clients: 16, Keys: 8, KeyEvery: 16, Ops: 400, Prefix: prefix, Seed: rand.Uint64()}
	if *long {
		w.Ops, w.KeyEvery = 20000, 80
	}
	return w
}

func TestLinearizable(t *testing.T) {
	t.Parallel()
	stores := []struct {
		name  string
		store func(testing.TB) string
	}{
		{"pebble", pebbleStore},
		{"postgres", postgresStore},
	}
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			ctx := testCtx(t)
			d := startIdemd(t, s.store(t))
			rec := harness.NewRecorder()
			w := workload(randomName("k"))
			cs := clients(t, d.Addr, w.Clients, rec, 5*time.Second)
			keys := w.Run(ctx, cs)
			// Every key read once more at the end: what the history left behind.
			for _, k := range keys {
				cs[0].Lookup(ctx, k)
			}
			checkHistory(t, rec)
			// No fault is injected here: a call without an answer is idemd
			// failing, and an unknown outcome would let the checker excuse it.
			if _, unknown := rec.Counts(); unknown > 0 || rec.Dropped() > 0 {
				t.Errorf("%d calls with unknown outcome and %d unanswered, want none without faults", unknown, rec.Dropped())
			}
		})
	}
}
