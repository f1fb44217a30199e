package cockroach

import (
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/idemhq/idem/storage"
)

// TestBatchReserveRerunErrorKeepsAppliedItems: BatchReserve commits its
// first statement (item a RESERVED), then re-runs only the stale item b.
// When that second statement fails, a's caller must still get its
// reservation and token (through the coalescer, a and b are two unrelated
// callers); only b fails.
func TestBatchReserveRerunErrorKeepsAppliedItems(t *testing.T) {
	ctx := testCtx(t)
	app := randomName("partial_")
	base := migratedURL(t, postgresURL(t))
	s := openTest(t, withParams(t, base, "application_name", app, ParamStatementTimeout, "1s", ParamCoalesce, "0"))
	defer s.Close()
	conn := func() *pgx.Conn {
		c, err := pgx.Connect(ctx, withParams(t, base, "application_name", "other"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(ctx) })
		return c
	}
	w1, w2 := conn(), conn()
	p := func(k string) storage.ReserveParams {
		return storage.ReserveParams{ID: storage.ID{Tenant: "t", Namespace: "ns", Key: k}, Fingerprint: []byte("fp"), LeaseTTL: time.Hour, Retention: time.Hour}
	}

	// The second statement must lose a race against w2; try a few times.
	for round := range 10 {
		a, b := fmt.Sprintf("a%d", round), fmt.Sprintf("b%d", round)
		// b is RELEASED; w1 takes it over and leaves its transaction open.
		if _, err := w1.Exec(ctx, `INSERT INTO idem_records (tenant, namespace, idem_key, fingerprint, state, token, attempts, created_at, lease_expires_at, expires_at) VALUES ('t', 'ns', $1, 'fp', 3, 1, 1, now(), now() + interval '1 hour', now() + interval '1 hour')`, b); err != nil {
			t.Fatal(err)
		}
		tx1, err := w1.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx1.Exec(ctx, `UPDATE idem_records SET state = 1, token = 2, attempts = 2 WHERE idem_key = $1`, b); err != nil {
			t.Fatal(err)
		}
		type answer struct {
			res []storage.ReserveResult
			err error
		}
		done := make(chan answer, 1)
		go func() {
			res, err := s.BatchReserve(ctx, []storage.ReserveParams{p(a), p(b)})
			done <- answer{res, err}
		}()
		waitBlocked(ctx, t, w1, app)
		// w2 waits for the batch's first statement (on a's row), then at
		// once, server-side, locks b for 2s, so the batch's re-run of b
		// (its snapshot was stale) times out.
		locked := make(chan error, 1)
		go func() {
			_, err := w2.Exec(ctx, fmt.Sprintf(`DO $$ BEGIN
				INSERT INTO idem_records (tenant, namespace, idem_key, fingerprint, state, token, attempts, created_at, lease_expires_at, expires_at)
				VALUES ('t', 'ns', '%s', 'x', 1, 1, 1, now(), now(), now()) ON CONFLICT DO NOTHING;
				PERFORM 1 FROM idem_records WHERE idem_key = '%s' FOR UPDATE;
				PERFORM pg_sleep(2);
			END $$`, a, b))
			locked <- err
		}()
		waitBlocked(ctx, t, w1, "other")
		if err := tx1.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		ans := <-done
		if err := <-locked; err != nil {
			t.Fatal(err)
		}
		if ans.err != nil {
			t.Fatalf("BatchReserve() error = %v; want an answer per item", ans.err)
		}
		if ans.res[1].Err == nil {
			continue // the re-run won the race
		}
		got := ans.res[0]
		if got.Err != nil || got.Outcome != storage.OutcomeReserved {
			t.Fatalf("item %s = %v, %v while only %s's re-run failed (%v); want RESERVED", a, got.Outcome, got.Err, b, ans.res[1].Err)
		}
		rec, err := s.Lookup(ctx, p(a).ID)
		if err != nil || rec.State != storage.StateInProgress || rec.Token != got.Record.Token {
			t.Fatalf("Lookup(%s) = %+v, %v; want IN_PROGRESS with the token the batch answered (%d)", a, rec, err, got.Record.Token)
		}
		return
	}
	t.Skip("the re-run never lost its race in 10 rounds: nothing was checked")
}
