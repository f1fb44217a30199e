package cockroach

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/idemhq/idem/storage"
)

// TestBatchCompleteRetryOnAnotherConnection: BatchComplete retries a
// deadlocked (40P01) batch by sending the same *pgx.Batch again. pgx stored
// the first connection's prepared-statement description in each queued
// query, so when the retry lands on another connection (here: the first one
// passed pool_max_conn_lifetime and was destroyed on release, as happens
// hourly by default) it executes a statement that was never prepared there.
func TestBatchCompleteRetryOnAnotherConnection(t *testing.T) {
	ctx := testCtx(t)
	app := randomName("retry_")
	base := migratedURL(t, postgresURL(t))
	u := withParams(t, base, "application_name", app,
		"pool_max_conn_lifetime", "300ms", "pool_max_conn_lifetime_jitter", "0s", ParamCoalesce, "0")
	s := openTest(t, u)
	defer s.Close()

	ids := []storage.ID{{Tenant: "t", Namespace: "ns", Key: "a"}, {Tenant: "t", Namespace: "ns", Key: "b"}}
	var items []storage.CompleteParams
	for _, id := range ids {
		out, rec, err := s.Reserve(ctx, storage.ReserveParams{ID: id, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour})
		if err != nil || out != storage.OutcomeReserved {
			t.Fatalf("Reserve(%s) = %v, %v", id.Key, out, err)
		}
		items = append(items, storage.CompleteParams{ID: id, Token: rec.Token, Result: &storage.Result{Body: []byte(id.Key)}, Retention: time.Hour})
	}

	other, err := pgx.Connect(ctx, withParams(t, base, "application_name", "other"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	tx, err := other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	// The batch's deadlock check (1 s, PostgreSQL's default) must run
	// before this transaction's, so that the batch is the one aborted and
	// retried.
	if _, err := tx.Exec(ctx, `SET LOCAL deadlock_timeout = '30s'`); err != nil {
		t.Fatal(err)
	}
	// Hold b: the batch completes a, then waits for b.
	if _, err := tx.Exec(ctx, `UPDATE idem_records SET attempts = attempts WHERE idem_key = 'b'`); err != nil {
		t.Fatal(err)
	}
	type answer struct {
		res []storage.CompleteResult
		err error
	}
	done := make(chan answer, 1)
	go func() {
		res, err := s.BatchComplete(ctx, items)
		done <- answer{res, err}
	}()
	waitBlocked(ctx, t, other, app)
	// Now wait for a: a deadlock, which the batch (waiting longer) loses.
	if _, err := tx.Exec(ctx, `UPDATE idem_records SET attempts = attempts WHERE idem_key = 'a'`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	a := <-done
	if a.err != nil {
		t.Fatalf("BatchComplete() error = %v; want both items completed after the deadlock retry", a.err)
	}
	for i, r := range a.res {
		if r.Err != nil || r.Record.State != storage.StateCompleted {
			t.Errorf("item %d = %+v", i, r)
		}
	}
}
