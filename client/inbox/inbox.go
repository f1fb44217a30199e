package inbox

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	crdbpgx "github.com/cockroachdb/cockroach-go/v2/crdb/crdbpgxv5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DB is what the inbox needs from a database handle; *pgxpool.Pool and
// *pgx.Conn satisfy it. Process caches the dialect per DB value, so pass the
// same pool every time rather than a fresh wrapper per call (such as a
// connection acquired per message): each of those costs a SELECT version().
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Dialect is the SQL database behind a DB.
type Dialect int

const (
	PostgreSQL  Dialect = 1
	CockroachDB Dialect = 2
)

func (d Dialect) String() string {
	switch d {
	case PostgreSQL:
		return "PostgreSQL"
	case CockroachDB:
		return "CockroachDB"
	}
	return "unknown"
}

// Option configures Process.
type Option func(*options)

type options struct {
	txOptions  pgx.TxOptions
	maxRetries int
	backoff    time.Duration
	maxBackoff time.Duration
}

func defaultOptions() options {
	return options{maxRetries: 20, backoff: 5 * time.Millisecond, maxBackoff: 500 * time.Millisecond}
}

// WithTxOptions sets the transaction's isolation level and access mode; the
// default is the database's default isolation.
func WithTxOptions(o pgx.TxOptions) Option { return func(op *options) { op.txOptions = o } }

// WithMaxRetries bounds the PostgreSQL retry loop (default 20 retries after
// the first try). CockroachDB retries are bounded by cockroach-go.
func WithMaxRetries(n int) Option { return func(op *options) { op.maxRetries = n } }

// WithBackoff sets the first and the largest pause between PostgreSQL
// retries (default 5ms and 500ms, doubled per try, with jitter).
func WithBackoff(first, max time.Duration) Option {
	return func(op *options) { op.backoff, op.maxBackoff = first, max }
}

var (
	dialects sync.Map // DB → Dialect
	cached   atomic.Int64
)

// maxDialects bounds the cache: a handle per call (pgxpool hands out a new
// *pgxpool.Conn per Acquire) would otherwise add an entry per message for
// good, pinning each released handle and its pool.
const maxDialects = 1024

// DetectDialect reports which database db talks to, asking once per db.
func DetectDialect(ctx context.Context, db DB) (Dialect, error) {
	// Only comparable handles can key the cache; others are asked each time.
	// The value, not the type: an interface field holding a slice makes a
	// comparable type's value panic as a map key.
	cacheable := reflect.ValueOf(db).Comparable()
	if cacheable {
		if d, ok := dialects.Load(db); ok {
			return d.(Dialect), nil
		}
	}
	var v string
	if err := db.QueryRow(ctx, "SELECT version()").Scan(&v); err != nil {
		return 0, fmt.Errorf("idem: inbox: detect database dialect: %w", err)
	}
	d := PostgreSQL
	if strings.Contains(v, "CockroachDB") {
		d = CockroachDB
	}
	if cacheable {
		if _, loaded := dialects.LoadOrStore(db, d); !loaded && cached.Add(1) > maxDialects {
			// Forget them all: the live handles are asked once more.
			dialects.Clear()
			cached.Store(0)
		}
	}
	return d, nil
}

const insertMarker = `INSERT INTO idem_inbox (consumer, msg_id, processed_at) VALUES ($1, $2, now())
ON CONFLICT (consumer, msg_id) DO NOTHING`

// Process runs fn at most once per (consumer, msgID), in the same
// transaction as the marker that records it. processed is false when the
// marker already existed: the message was handled before and fn did not
// run. When fn returns an error, nothing of the try is committed (neither the
// marker nor fn's writes) and the error is returned; the message may be
// redelivered. fn may run several times when the database asks for a retry,
// each time with the earlier try's writes undone (a new transaction on
// PostgreSQL, a rollback to a savepoint of the same one on CockroachDB), so
// it must do nothing outside tx that cannot be repeated. fn must not end tx:
// its Commit and Rollback return an error and fail the try, while nested
// transactions (tx.Begin, a savepoint) work as usual.
func Process(ctx context.Context, db DB, consumer, msgID string, fn func(ctx context.Context, tx pgx.Tx) error, opts ...Option) (processed bool, err error) {
	if consumer == "" || msgID == "" {
		return false, errors.New("idem: inbox: consumer and message id must not be empty")
	}
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	d, err := DetectDialect(ctx, db)
	if err != nil {
		return false, err
	}
	try := func(tx pgx.Tx) error {
		processed = false
		tag, err := tx.Exec(ctx, insertMarker, consumer, msgID)
		if err != nil {
			return fmt.Errorf("idem: inbox: insert marker: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return nil // duplicate: commit the empty transaction
		}
		g := &guardedTx{Tx: tx}
		fnErr := fn(ctx, g)
		if g.ended {
			// Whatever fn returned, the try must not commit: a commit by fn
			// has already been refused, and the writes it meant to roll back
			// must not commit either.
			return errors.Join(errEndedByFn, fnErr)
		}
		if fnErr != nil {
			return fnErr
		}
		processed = true
		return nil
	}
	if d == CockroachDB {
		err = crdbpgx.ExecuteTx(ctx, db, o.txOptions, try)
	} else {
		err = runPostgres(ctx, db, o, try)
	}
	if err != nil {
		return false, err
	}
	return processed, nil
}

var errEndedByFn = errors.New("idem: inbox: fn must not commit or roll back the transaction; return an error to roll it back")

// guardedTx is the transaction fn sees. Its Commit and Rollback are refused:
// a commit by fn would commit the marker with only the writes made so far,
// and every redelivery would then skip the rest as a duplicate. Nested
// transactions (savepoints, from Begin) work as usual.
type guardedTx struct {
	pgx.Tx
	ended bool
}

func (g *guardedTx) Commit(context.Context) error {
	g.ended = true
	return errEndedByFn
}

func (g *guardedTx) Rollback(context.Context) error {
	g.ended = true
	return errEndedByFn
}

// runPostgres retries the whole transaction, from a new BEGIN, while
// PostgreSQL reports a serialization failure or a deadlock. A failure at
// COMMIT is retried the same way: PostgreSQL rolled the transaction back.
func runPostgres(ctx context.Context, db DB, o options, try func(pgx.Tx) error) error {
	pause := o.backoff
	for attempt := 0; ; attempt++ {
		err := runOnce(ctx, db, o.txOptions, try)
		if err == nil || !Retryable(err) || attempt >= o.maxRetries {
			return err
		}
		// Full jitter, so the contenders of one conflict do not collide again.
		d := time.Millisecond
		if pause > 0 { // rand.N panics on zero: WithBackoff(0, 0) is allowed
			d += rand.N(pause)
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(ctx.Err(), err)
		case <-t.C:
		}
		pause = min(2*pause, o.maxBackoff)
	}
}

func runOnce(ctx context.Context, db DB, txo pgx.TxOptions, try func(pgx.Tx) error) error {
	tx, err := db.BeginTx(ctx, txo)
	if err != nil {
		return fmt.Errorf("idem: inbox: begin: %w", err)
	}
	// Whatever ends the attempt (an error, a failed commit, a panicking fn)
	// must not leave the transaction open: its marker's row lock would
	// block every redelivery, and the pool would never get the connection
	// back. After a commit, the rollback does nothing.
	defer rollback(ctx, tx)
	if err := try(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("idem: inbox: commit: %w", err)
	}
	return nil
}

// rollback outlives the caller's cancellation so that the connection goes
// back to the pool clean instead of being closed.
func rollback(ctx context.Context, tx pgx.Tx) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = tx.Rollback(rctx)
}

// Retryable reports whether err is a serialization failure (40001) or a
// deadlock (40P01), after which the whole transaction can be run again.
func Retryable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "40001" || pgErr.Code == "40P01"
	}
	return false
}

//go:embed migrate.sql
var migration string

// Migrate creates the idem_inbox table and its index if they are missing.
// It is safe to run from many replicas at once.
func Migrate(ctx context.Context, db DB) error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if err = migrateOnce(ctx, db); err == nil {
			return nil
		}
		// Two concurrent CREATE ... IF NOT EXISTS can still collide in the
		// catalog on PostgreSQL; the next try sees the winner's table.
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || (pgErr.Code != "23505" && pgErr.Code != "42P07" && !Retryable(err)) {
			break
		}
	}
	return fmt.Errorf("idem: inbox: migrate: %w", err)
}

func migrateOnce(ctx context.Context, db DB) error {
	for _, stmt := range strings.Split(migration, ";") {
		if strings.TrimSpace(stmt) == "" {
			continue
		}
		if _, err := db.Exec(ctx, stmt); err != nil {
			return err
		}
	}
	return nil
}

// Cleanup deletes markers processed more than olderThan ago, at most batch
// rows per statement so that no statement holds many locks or runs long,
// until none are left or ctx ends. It returns how many it deleted. Times are
// the database's own clock.
func Cleanup(ctx context.Context, db DB, olderThan time.Duration, batch int) (int64, error) {
	if batch <= 0 || olderThan < 0 {
		return 0, errors.New("idem: inbox: cleanup needs batch > 0 and olderThan >= 0")
	}
	const q = `DELETE FROM idem_inbox WHERE (consumer, msg_id) IN (
	SELECT consumer, msg_id FROM idem_inbox
	WHERE processed_at < now() - ($1::BIGINT * INTERVAL '1 microsecond')
	LIMIT $2)`
	var total int64
	for {
		tag, err := db.Exec(ctx, q, olderThan.Microseconds(), batch)
		if err != nil {
			return total, fmt.Errorf("idem: inbox: cleanup: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(batch) {
			return total, nil
		}
	}
}
