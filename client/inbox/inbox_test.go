package inbox_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/idemhq/idem/client/inbox"
)

const defaultTestTimeout = 30 * time.Second

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newDB returns a pool whose search_path is a schema of its own, with the
// inbox migrated and a business table "effects" without any unique
// constraint, so that a duplicate effect would show up as a second row.
func newDB(t *testing.T) *pgxpool.Pool {
	t.Helper()
	url := os.Getenv("IDEM_TEST_POSTGRES_URL")
	if url == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("IDEM_TEST_POSTGRES_URL is not set, and CI is: the inbox tests need PostgreSQL")
		}
		t.Skip("set IDEM_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test?sslmode=disable to run the inbox tests against PostgreSQL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect to IDEM_TEST_POSTGRES_URL: %v", err)
	}
	defer admin.Close(ctx)
	schema := fmt.Sprintf("inbox_%s_%d", strings.ToLower(strings.NewReplacer("/", "_", "-", "_", " ", "_").Replace(t.Name())), rand.Uint32())
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
		defer cancel()
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Errorf("drop schema: %v", err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop schema: %v", err)
		}
	})
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatalf("parse IDEM_TEST_POSTGRES_URL: %v", err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.MaxConns = 8
	db, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("pool: %v", err)
	}
	t.Cleanup(db.Close)
	if err := inbox.Migrate(ctx, db); err != nil {
		t.Fatalf("Migrate() = %v", err)
	}
	if _, err := db.Exec(ctx, `CREATE TABLE effects (msg_id TEXT NOT NULL);
CREATE TABLE counters (id INT PRIMARY KEY, v BIGINT NOT NULL);
INSERT INTO counters VALUES (1, 0), (2, 0)`); err != nil {
		t.Fatalf("create business tables: %v", err)
	}
	return db
}

func count(ctx context.Context, t *testing.T, db *pgxpool.Pool, q string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(ctx, q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func writeEffect(msgID string) func(ctx context.Context, tx pgx.Tx) error {
	return func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO effects (msg_id) VALUES ($1)", msgID)
		return err
	}
}

func TestDialect(t *testing.T) {
	db := newDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	got, err := inbox.DetectDialect(ctx, db)
	if err != nil || got != inbox.PostgreSQL {
		t.Errorf("DetectDialect() = %v, %v; want PostgreSQL, nil", got, err)
	}
}

func TestMigrateIsIdempotentAndConcurrent(t *testing.T) {
	db := newDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = inbox.Migrate(ctx, db) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Migrate() #%d = %v, want nil", i, err)
		}
	}
}

func TestProcess(t *testing.T) {
	errBusiness := errors.New("business rule refused")
	tests := []struct {
		name          string
		deliveries    []error // fn's answer per delivery of one message
		wantProcessed []bool
		wantErr       []error
		wantEffects   int
		wantMarkers   int
	}{
		{
			name:          "duplicate is skipped",
			deliveries:    []error{nil, nil, nil},
			wantProcessed: []bool{true, false, false},
			wantErr:       []error{nil, nil, nil},
			wantEffects:   1,
			wantMarkers:   1,
		},
		{
			name:          "fn error rolls back marker and write",
			deliveries:    []error{errBusiness},
			wantProcessed: []bool{false},
			wantErr:       []error{errBusiness},
			wantEffects:   0,
			wantMarkers:   0,
		},
		{
			name:          "redelivery after fn error runs fn again",
			deliveries:    []error{errBusiness, nil, nil},
			wantProcessed: []bool{false, true, false},
			wantErr:       []error{errBusiness, nil, nil},
			wantEffects:   1,
			wantMarkers:   1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := newDB(t)
			ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
			defer cancel()
			calls := 0
			for i, fnErr := range tt.deliveries {
				processed, err := inbox.Process(ctx, db, "projector", "m-1", func(ctx context.Context, tx pgx.Tx) error {
					calls++
					if err := writeEffect("m-1")(ctx, tx); err != nil {
						return err
					}
					return fnErr
				})
				if processed != tt.wantProcessed[i] || !errors.Is(err, tt.wantErr[i]) || (err != nil) != (tt.wantErr[i] != nil) {
					t.Errorf("delivery %d: Process() = %v, %v; want %v, %v", i, processed, err, tt.wantProcessed[i], tt.wantErr[i])
				}
			}
			if got := count(ctx, t, db, "SELECT count(*) FROM effects"); got != tt.wantEffects {
				t.Errorf("effects = %d, want %d", got, tt.wantEffects)
			}
			if got := count(ctx, t, db, "SELECT count(*) FROM idem_inbox"); got != tt.wantMarkers {
				t.Errorf("markers = %d, want %d", got, tt.wantMarkers)
			}
		})
	}
}

func TestProcessConsumersAreSeparate(t *testing.T) {
	db := newDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	for _, c := range []string{"a", "b", "a"} {
		if _, err := inbox.Process(ctx, db, c, "m-1", writeEffect(c)); err != nil {
			t.Fatalf("Process(%s) = %v", c, err)
		}
	}
	if got := count(ctx, t, db, "SELECT count(*) FROM effects"); got != 2 {
		t.Errorf("effects = %d, want 2 (one per consumer)", got)
	}
}

// TestProcessConcurrentDuplicates delivers one message to many consumers at
// once, as a broker does after a rebalance: exactly one runs fn.
func TestProcessConcurrentDuplicates(t *testing.T) {
	for _, iso := range []pgx.TxIsoLevel{pgx.ReadCommitted, pgx.RepeatableRead, pgx.Serializable} {
		t.Run(string(iso), func(t *testing.T) {
			db := newDB(t)
			ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
			defer cancel()
			var processed atomic.Int32
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					ok, err := inbox.Process(ctx, db, "projector", "m-1", writeEffect("m-1"), inbox.WithTxOptions(pgx.TxOptions{IsoLevel: iso}))
					if err != nil {
						t.Errorf("Process() = %v", err)
					}
					if ok {
						processed.Add(1)
					}
				})
			}
			wg.Wait()
			if got := processed.Load(); got != 1 {
				t.Errorf("processed = %d, want 1", got)
			}
			if got := count(ctx, t, db, "SELECT count(*) FROM effects"); got != 1 {
				t.Errorf("effects = %d, want 1", got)
			}
		})
	}
}

// TestProcessRetriesSerializationFailure makes two SERIALIZABLE transactions
// read and then update the same counter; PostgreSQL aborts one with 40001,
// and Process must run it again from a new BEGIN so both increments land.
func TestProcessRetriesSerializationFailure(t *testing.T) {
	db := newDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	var read sync.WaitGroup
	read.Add(2)
	var calls atomic.Int32
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			first := true
			ok, err := inbox.Process(ctx, db, "projector", fmt.Sprintf("m-%d", i), func(ctx context.Context, tx pgx.Tx) error {
				calls.Add(1)
				var v int64
				if err := tx.QueryRow(ctx, "SELECT v FROM counters WHERE id = 1").Scan(&v); err != nil {
					return err
				}
				if first {
					// Both first tries hold their snapshot before either writes.
					first = false
					read.Done()
					read.Wait()
				}
				_, err := tx.Exec(ctx, "UPDATE counters SET v = $1 WHERE id = 1", v+1)
				return err
			}, inbox.WithTxOptions(pgx.TxOptions{IsoLevel: pgx.Serializable}))
			if !ok || err != nil {
				t.Errorf("Process(m-%d) = %v, %v; want true, nil", i, ok, err)
			}
		})
	}
	wg.Wait()
	if got := count(ctx, t, db, "SELECT v::INT FROM counters WHERE id = 1"); got != 2 {
		t.Errorf("counter = %d, want 2 (a lost update means the retry did not happen)", got)
	}
	if got := calls.Load(); got < 3 {
		t.Errorf("fn calls = %d, want >= 3 (one try must have been retried)", got)
	}
	if got := count(ctx, t, db, "SELECT count(*) FROM idem_inbox"); got != 2 {
		t.Errorf("markers = %d, want 2", got)
	}
}

// TestProcessRetriesDeadlock locks two rows in opposite orders; PostgreSQL
// breaks the deadlock with 40P01 and Process retries the victim.
func TestProcessRetriesDeadlock(t *testing.T) {
	db := newDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	var locked sync.WaitGroup
	locked.Add(2)
	var calls atomic.Int32
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			first := true
			rows := [2]int{1 + i, 2 - i}
			ok, err := inbox.Process(ctx, db, "projector", fmt.Sprintf("m-%d", i), func(ctx context.Context, tx pgx.Tx) error {
				calls.Add(1)
				if _, err := tx.Exec(ctx, "SET LOCAL deadlock_timeout = '50ms'"); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, "UPDATE counters SET v = v + 1 WHERE id = $1", rows[0]); err != nil {
					return err
				}
				if first {
					first = false
					locked.Done()
					locked.Wait()
				}
				_, err := tx.Exec(ctx, "UPDATE counters SET v = v + 1 WHERE id = $1", rows[1])
				return err
			})
			if !ok || err != nil {
				t.Errorf("Process(m-%d) = %v, %v; want true, nil", i, ok, err)
			}
		})
	}
	wg.Wait()
	if got := count(ctx, t, db, "SELECT sum(v)::INT FROM counters"); got != 4 {
		t.Errorf("sum of counters = %d, want 4", got)
	}
	if got := calls.Load(); got < 3 {
		t.Errorf("fn calls = %d, want >= 3 (the deadlock victim must have been retried)", got)
	}
}

func TestProcessGivesUpOnOtherErrors(t *testing.T) {
	db := newDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	calls := 0
	_, err := inbox.Process(ctx, db, "projector", "m-1", func(ctx context.Context, tx pgx.Tx) error {
		calls++
		_, err := tx.Exec(ctx, "INSERT INTO no_such_table VALUES (1)")
		return err
	})
	if err == nil || inbox.Retryable(err) {
		t.Errorf("Process() error = %v, want a non-retryable error", err)
	}
	if calls != 1 {
		t.Errorf("fn calls = %d, want 1", calls)
	}
}

// TestEndToEndExactlyOnce is the guarantee: a stream of N messages, some
// redelivered because the consumer died between its write and the commit,
// some redelivered because it died between the commit and the broker ack,
// and then the whole stream replayed; the business table ends with exactly
// N rows and the duplicates seen equal the deliveries of already-committed
// messages.
func TestEndToEndExactlyOnce(t *testing.T) {
	const n = 60
	db := newDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()

	type delivery struct {
		id             string
		crashInTx      bool // cancel after the side effect, before COMMIT
		crashBeforeAck bool // the commit happened, the ack was lost
	}
	queue := make([]delivery, 0, 2*n)
	for i := range n {
		queue = append(queue, delivery{id: fmt.Sprintf("order-%03d", i), crashInTx: i%3 == 0, crashBeforeAck: i%5 == 0})
	}
	var duplicates, wantDuplicates, crashes int
	committed := map[string]bool{}
	deliver := func(d delivery) (acked bool) {
		cctx, ccancel := context.WithCancel(ctx)
		defer ccancel()
		processed, err := inbox.Process(cctx, db, "projector", d.id, func(ctx context.Context, tx pgx.Tx) error {
			if err := writeEffect(d.id)(ctx, tx); err != nil {
				return err
			}
			if d.crashInTx {
				ccancel() // the process dies: COMMIT never reaches the database
			}
			return nil
		})
		if err != nil {
			if !d.crashInTx {
				t.Fatalf("Process(%s) = %v", d.id, err)
			}
			crashes++
			return false
		}
		if committed[d.id] {
			wantDuplicates++
		}
		if processed {
			committed[d.id] = true
		} else {
			duplicates++
		}
		return !d.crashBeforeAck
	}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		if !deliver(d) {
			// The broker redelivers an unacked message, this time without a crash.
			queue = append(queue, delivery{id: d.id, crashBeforeAck: d.crashInTx && d.crashBeforeAck})
		}
	}
	// An operator replays the whole stream.
	for i := range n {
		deliver(delivery{id: fmt.Sprintf("order-%03d", i)})
	}
	if got := count(ctx, t, db, "SELECT count(*) FROM effects"); got != n {
		t.Errorf("effects = %d, want %d", got, n)
	}
	if got := count(ctx, t, db, "SELECT count(DISTINCT msg_id) FROM effects"); got != n {
		t.Errorf("distinct effects = %d, want %d", got, n)
	}
	if duplicates != wantDuplicates {
		t.Errorf("duplicates = %d, want %d (deliveries of committed messages)", duplicates, wantDuplicates)
	}
	if wantCrashes := (n + 2) / 3; crashes != wantCrashes {
		t.Errorf("crashes = %d, want %d", crashes, wantCrashes)
	}
	if duplicates <= n {
		t.Errorf("duplicates = %d, want more than the %d replayed (acks lost after commit)", duplicates, n)
	}
}

func TestCleanup(t *testing.T) {
	db := newDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	// 25 old markers and 5 fresh ones; times are the database's.
	if _, err := db.Exec(ctx, `INSERT INTO idem_inbox (consumer, msg_id, processed_at)
SELECT 'c', 'old-' || g, now() - INTERVAL '2 hours' FROM generate_series(1, 25) g
UNION ALL SELECT 'c', 'new-' || g, now() FROM generate_series(1, 5) g`); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		olderThan time.Duration
		batch     int
		want      int64
		left      int
	}{
		{"nothing older than a day", 24 * time.Hour, 10, 0, 30},
		{"old ones in bounded batches", time.Hour, 10, 25, 5},
		{"again finds nothing", time.Hour, 10, 0, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := inbox.Cleanup(ctx, db, tt.olderThan, tt.batch)
			if err != nil || got != tt.want {
				t.Errorf("Cleanup() = %d, %v; want %d, nil", got, err, tt.want)
			}
			if left := count(ctx, t, db, "SELECT count(*) FROM idem_inbox"); left != tt.left {
				t.Errorf("markers left = %d, want %d", left, tt.left)
			}
		})
	}
	if _, err := inbox.Cleanup(ctx, db, time.Hour, 0); err == nil {
		t.Error("Cleanup(batch 0) = nil error, want an error")
	}
}
