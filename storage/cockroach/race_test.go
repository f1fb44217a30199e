package cockroach

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/idemhq/idem/storage"
)

// TestSnapshotTrap forces the snapshot trap of sql.go: a Reserve whose statement
// began before a concurrent writer committed. The conflict path waits for
// the writer and sees its row, the fallback SELECT reads the older snapshot
// and finds either no row or a stale one; the store must re-run the
// statement and answer from the committed row.
func TestSnapshotTrap(t *testing.T) {
	base := postgresURL(t)
	tests := []struct {
		name string
		// setup runs before the writer's transaction, committed.
		setup string
		// write runs in the writer's transaction, left open while Reserve starts.
		write string
		batch bool
	}{
		{
			name:  "InsertedAfterSnapshot",
			write: `INSERT INTO idem_records (tenant, namespace, idem_key, fingerprint, state, token, attempts, created_at, lease_expires_at, expires_at) VALUES ('t', 'ns', 'k', 'fp', 1, 1, 1, now(), now() + interval '1 hour', now() + interval '1 hour')`,
		},
		{
			name:  "InsertedAfterSnapshotBatch",
			write: `INSERT INTO idem_records (tenant, namespace, idem_key, fingerprint, state, token, attempts, created_at, lease_expires_at, expires_at) VALUES ('t', 'ns', 'k', 'fp', 1, 1, 1, now(), now() + interval '1 hour', now() + interval '1 hour')`,
			batch: true,
		},
		{
			name:  "TakenOverAfterSnapshot",
			setup: `INSERT INTO idem_records (tenant, namespace, idem_key, fingerprint, state, token, attempts, created_at, lease_expires_at, expires_at) VALUES ('t', 'ns', 'k', 'fp', 3, 1, 1, now(), now() + interval '1 hour', now() + interval '1 hour')`,
			write: `UPDATE idem_records SET state = 1, token = 2, attempts = 2 WHERE idem_key = 'k'`,
		},
		{
			name:  "TakenOverAfterSnapshotBatch",
			setup: `INSERT INTO idem_records (tenant, namespace, idem_key, fingerprint, state, token, attempts, created_at, lease_expires_at, expires_at) VALUES ('t', 'ns', 'k', 'fp', 3, 1, 1, now(), now() + interval '1 hour', now() + interval '1 hour')`,
			write: `UPDATE idem_records SET state = 1, token = 2, attempts = 2 WHERE idem_key = 'k'`,
			batch: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			app := randomName("trap_")
			u := withParams(t, migratedURL(t, base), "application_name", app)
			s := openTest(t, u)
			defer s.Close()
			writer, err := pgx.Connect(ctx, u)
			if err != nil {
				t.Fatal(err)
			}
			defer writer.Close(ctx)
			if tc.setup != "" {
				if _, err := writer.Exec(ctx, tc.setup); err != nil {
					t.Fatalf("setup: %v", err)
				}
			}
			tx, err := writer.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			if _, err := tx.Exec(ctx, tc.write); err != nil {
				t.Fatalf("writer: %v", err)
			}

			before := s.Reruns()
			p := storage.ReserveParams{ID: storage.ID{Tenant: "t", Namespace: "ns", Key: "k"}, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour}
			type answer struct {
				out storage.Outcome
				rec *storage.Record
				err error
			}
			done := make(chan answer, 1)
			go func() {
				if tc.batch {
					res, err := s.BatchReserve(ctx, []storage.ReserveParams{p})
					if err != nil {
						done <- answer{err: err}
						return
					}
					done <- answer{res[0].Outcome, res[0].Record, res[0].Err}
					return
				}
				out, rec, err := s.Reserve(ctx, p)
				done <- answer{out, rec, err}
			}()
			// Commit only once Reserve's statement is blocked on the
			// writer's row lock, so its snapshot predates the commit.
			waitBlocked(ctx, t, writer, app)
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			a := <-done
			if a.err != nil {
				t.Fatalf("Reserve() error = %v, want nil", a.err)
			}
			if a.out != storage.OutcomeInProgress {
				t.Errorf("Reserve() outcome = %v, want IN_PROGRESS", a.out)
			}
			if a.rec == nil || a.rec.State != storage.StateInProgress {
				t.Fatalf("Reserve() record = %+v, want the writer's IN_PROGRESS record", a.rec)
			}
			if got := s.Reruns() - before; got < 1 {
				t.Errorf("Reruns() grew by %d, want ≥ 1 (the trap was not hit)", got)
			}
		})
	}
}

// waitBlocked polls until a backend of application app waits on a lock.
func waitBlocked(ctx context.Context, t *testing.T, conn *pgx.Conn, app string) {
	t.Helper()
	for {
		// conn may be inside a transaction, where PostgreSQL keeps the
		// first pg_stat_activity snapshot it took: drop it every poll.
		if _, err := conn.Exec(ctx, `SELECT pg_stat_clear_snapshot()`); err != nil {
			t.Fatalf("pg_stat_clear_snapshot: %v", err)
		}
		var n int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`, app).Scan(&n)
		if err != nil {
			t.Fatalf("pg_stat_activity: %v", err)
		}
		if n > 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatal("Reserve never blocked on the writer's lock")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// TestTwoReplicas: two stores (as two idemd replicas would have) on one
// database, 64 concurrent Reserves of one key split across them, exactly
// one RESERVED.
func TestTwoReplicas(t *testing.T) {
	ctx := testCtx(t)
	// 8 connections each: 64 callers on the default pool of 32 would take
	// 64 of the shared test database's 100 connections.
	u := withParams(t, migratedURL(t, postgresURL(t)), "pool_max_conns", "8")
	replicas := []*Store{openTest(t, u), openTest(t, u)}
	for _, s := range replicas {
		defer s.Close()
	}
	for round := range 5 {
		key := fmt.Sprintf("k%d", round)
		var mu sync.Mutex
		counts := map[storage.Outcome]int{}
		var wg sync.WaitGroup
		for i := range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out, _, err := replicas[i%2].Reserve(ctx, storage.ReserveParams{ID: storage.ID{Tenant: "t", Namespace: "ns", Key: key}, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour})
				if err != nil {
					t.Errorf("Reserve() error = %v", err)
					return
				}
				mu.Lock()
				counts[out]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		if counts[storage.OutcomeReserved] != 1 || counts[storage.OutcomeInProgress] != 63 {
			t.Errorf("round %d outcomes = %v, want 1 RESERVED and 63 IN_PROGRESS", round, counts)
		}
	}
}
