package cockroach

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/idemhq/idem/storage"
)

// TestLockTimeoutIsUnavailable: a role- or URL-level lock_timeout (common
// DBA practice) cuts a Reserve waiting on a row lock with SQLSTATE 55P03.
// Nothing was written and the next try may succeed, so the caller must see
// ErrUnavailable (UNAVAILABLE with RetryInfo), not an unknown error that
// the server turns into INTERNAL.
func TestLockTimeoutIsUnavailable(t *testing.T) {
	ctx := testCtx(t)
	u := migratedURL(t, postgresURL(t))
	s := openTest(t, withParams(t, u, "lock_timeout", "50", ParamCoalesce, "0"))
	defer s.Close()
	writer, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close(ctx)
	p := storage.ReserveParams{ID: storage.ID{Tenant: "t", Namespace: "ns", Key: "k"}, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour}
	if _, _, err := s.Reserve(ctx, p); err != nil {
		t.Fatal(err)
	}
	tx, err := writer.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	// Held until the test ends, so Reserve's lock wait always times out.
	if _, err := tx.Exec(ctx, `SELECT 1 FROM idem_records WHERE idem_key = 'k' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	_, _, err = s.Reserve(ctx, p)
	if !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("Reserve() on a row locked past lock_timeout error = %v, want ErrUnavailable", err)
	}
	// A coalesced batch cut by one item's lock wait runs again item by
	// item, so only the caller of the locked record fails.
	if !individually(ctx, err) {
		t.Errorf("individually(%v) = false, want true: a lock wait is one item's, not the store's", err)
	}
}

// TestMapErrTransient: SQLSTATEs that say "not now" rather than "never"
// are ErrUnavailable, and no error carries the SQL text.
func TestMapErrTransient(t *testing.T) {
	s := &Store{cfg: &config{where: "db:5432/idem"}}
	ctx := context.Background()
	for _, code := range []string{"55P03", "25006", "58000", "58030", "08006", "53300", "57P01", "57014", "40001", "40P01", "40003"} {
		err := s.mapErr(ctx, &pgconn.PgError{Code: code, Message: "m", InternalQuery: "SELECT secret"})
		if !errors.Is(err, storage.ErrUnavailable) {
			t.Errorf("mapErr(SQLSTATE %s) = %v, want ErrUnavailable", code, err)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("mapErr(SQLSTATE %s) = %q, leaks the SQL", code, err)
		}
	}
	if err := s.mapErr(ctx, &pgconn.PgError{Code: "22021", Message: "m"}); errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("mapErr(SQLSTATE 22021) = %v, want a permanent error", err)
	}
}

// TestMigrateNotCutByStatementTimeout: statement_timeout bounds serving
// statements; a migration's DDL waits for locks and rewrites tables (a
// CockroachDB REGIONAL BY ROW change on a full table takes minutes), and
// cutting it leaves the schema outdated and every replica refusing to start.
func TestMigrateNotCutByStatementTimeout(t *testing.T) {
	ctx := testCtx(t)
	u := freshSchema(t, postgresURL(t))
	applySet(t, u, setShared) // the PostgreSQL set's CREATE INDEX is pending
	blocker, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Close(ctx)
	tx, err := blocker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	// An open writer holds ROW EXCLUSIVE, which CREATE INDEX waits for.
	if _, err := tx.Exec(ctx, `INSERT INTO idem_records (tenant, namespace, idem_key, fingerprint, state, token, attempts, created_at, lease_expires_at, expires_at) VALUES ('t', 'ns', 'k', 'fp', 1, 1, 1, now(), now(), now())`); err != nil {
		t.Fatal(err)
	}
	// pg_stat_activity is read once per transaction: watch from another
	// connection than the blocker's.
	watcher, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close(ctx)
	app := randomName("migrate_")
	done := make(chan error, 1)
	go func() {
		done <- Migrate(ctx, withParams(t, u, ParamStatementTimeout, "1ms", "application_name", app), quiet)
	}()
	// Release the writer only once the DDL has waited, by the database's
	// clock, 100 times the statement timeout.
	for {
		var n int
		if err := watcher.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock' AND clock_timestamp() - query_start > interval '100 ms'`, app).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("Migrate() behind a lock = %v before the lock was released; want it to wait", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Migrate() error = %v, want nil", err)
	}
	usable(t, u)
}
