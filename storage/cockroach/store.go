package cockroach

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/internal/coalesce"
)

// Dialects Dialect reports.
const (
	DialectPostgres  = "postgres"
	DialectCockroach = "cockroachdb"
)

// maxReruns bounds how often one call re-runs a statement whose snapshot
// was stale; each re-run means another writer committed in between.
const maxReruns = 100

func init() {
	storage.Register("postgres", openStore)
	storage.Register("postgresql", openStore)
}

func openStore(ctx context.Context, u *url.URL, opts storage.OpenOptions) (storage.Store, error) {
	s, err := Open(ctx, u.String(), opts.Logger)
	if err != nil {
		return nil, err
	}
	return s, nil
}

var _ storage.Store = (*Store)(nil)

// Store keeps records in PostgreSQL or CockroachDB. Every decision is made
// by the database in one statement, so any number of idemd replicas may
// share one database.
type Store struct {
	pool    *pgxpool.Pool
	cfg     *config
	log     *slog.Logger
	dialect string
	version string
	sqlList string

	// offset is added to the database's now(), in microseconds. It is 0
	// except under the conformance suite's fake clock.
	offset atomic.Int64
	closed atomic.Bool
	reruns atomic.Uint64
	swept  atomic.Uint64

	stopSweep context.CancelFunc
	sweepWG   sync.WaitGroup

	// co coalesces concurrent Reserves and Completes (nil: off).
	co *coalesce.Ops
}

// Open connects to the database rawURL names (postgres:// or
// postgresql://), detects whether it is CockroachDB or PostgreSQL, checks
// that its schema is the one this binary knows (see Migrate) and, on
// PostgreSQL, starts the expiry sweeper. URL parameters are described at
// ParamStatementTimeout and below; the rest go to pgx.
func Open(ctx context.Context, rawURL string, logger *slog.Logger) (*Store, error) {
	u, err := storage.ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	cfg, err := parseConfig(u)
	if err != nil {
		return nil, err
	}
	return openConfig(ctx, cfg, logger)
}

func openConfig(ctx context.Context, cfg *config, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.Default()
	}
	pool, dialect, version, err := connect(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	s := &Store{pool: pool, cfg: cfg, log: logger, dialect: dialect, version: version}
	collate := ""
	if dialect == DialectPostgres {
		// List pages in byte order whatever the database's collation;
		// CockroachDB's strings already sort that way.
		collate = ` COLLATE "C"`
	}
	s.sqlList = fmt.Sprintf(sqlList, collate, cols("r", true))
	if cfg.coalesce > 0 {
		// A batch statement cannot touch one row twice (ON CONFLICT), and
		// one the database refuses for an item's data runs item by item.
		s.co = coalesce.NewOps(cfg.coalesce, coalesceMax, coalesce.Backend{
			Reserve: s.reserve, Complete: s.complete, BatchReserve: s.BatchReserve, BatchComplete: s.BatchComplete,
			OneByOne: individually, Distinct: true,
		})
	}
	if err := checkSchema(ctx, pool, dialect, cfg.where); err != nil {
		pool.Close()
		return nil, err
	}
	sweepCtx, stop := context.WithCancel(context.Background())
	s.stopSweep = stop
	if dialect == DialectPostgres && cfg.sweepInterval > 0 {
		s.sweepWG.Add(1)
		go s.sweepLoop(sweepCtx)
	}
	return s, nil
}

// connect makes the pool and waits, up to the connect_retry period, for the
// database to answer SELECT version().
func connect(ctx context.Context, cfg *config, logger *slog.Logger) (*pgxpool.Pool, string, string, error) {
	pool, err := pgxpool.NewWithConfig(ctx, cfg.pool)
	if err != nil {
		return nil, "", "", fmt.Errorf("idem: cannot configure connections to %s: %v", cfg.where, err)
	}
	deadline := time.Now().Add(cfg.connectRetry)
	backoff := 100 * time.Millisecond
	for {
		var version string
		err = pool.QueryRow(ctx, "SELECT version()").Scan(&version)
		if err == nil {
			dialect := DialectPostgres
			if strings.Contains(version, "CockroachDB") {
				dialect = DialectCockroach
			}
			logger.Info("idem: connected to store", "store", cfg.where, "dialect", dialect, "version", version)
			return pool, dialect, version, nil
		}
		if refusedLogin(err) {
			// A wrong password, role, database or connection setting does
			// not heal with retries; a deployment restarts the process if
			// it was a race.
			pool.Close()
			return nil, "", "", fmt.Errorf("idem: %s refused the login: %s", cfg.where, oneLine(err))
		}
		if ctx.Err() != nil || time.Now().Add(backoff).After(deadline) {
			pool.Close()
			if ctx.Err() != nil {
				return nil, "", "", fmt.Errorf("idem: connecting to %s: %w", cfg.where, ctx.Err())
			}
			return nil, "", "", fmt.Errorf("%w: cannot connect to %s: %s", storage.ErrUnavailable, cfg.where, oneLine(err))
		}
		logger.Warn("idem: store not reachable yet, retrying", "store", cfg.where, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// refusedLogin reports whether the database answered and refused this
// login: SQLSTATE class 28 (invalid authorization: password, role, a
// pg_hba rule), 3D000 (no such database), or a run-time parameter of the
// URL it does not know (42704) or takes no such value for (22023).
func refusedLogin(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "28") || pe.Code == "3D000" || pe.Code == "42704" || pe.Code == "22023")
}

// Dialect is DialectCockroach or DialectPostgres, as detected at connect.
func (s *Store) Dialect() string { return s.dialect }

// ServerVersion is the database's SELECT version(), for health details.
func (s *Store) ServerVersion() string { return s.version }

// Swept is the number of expired rows the sweeper of this Store deleted.
func (s *Store) Swept() uint64 { return s.swept.Load() }

// Reruns is the number of statements re-run because their snapshot was
// older than the row they conflicted with.
func (s *Store) Reruns() uint64 { return s.reruns.Load() }

// row is one answer of a statement: the record as written (applied) or as
// read, and the database's now.
type row struct {
	applied bool
	rec     *storage.Record
	now     time.Time
}

// badRow is a row of a batch statement whose columns were read but whose
// record could not be decoded (a damaged result or checkpoint): an answer
// for its own item only, since the statement applied the others.
type badRow struct {
	id  storage.ID
	err error
}

// errDecode marks errors of reading a row, which a retry cannot cure.
type errDecode struct{ err error }

func (e errDecode) Error() string { return e.err.Error() }
func (e errDecode) Unwrap() error { return e.err }

func (b badRow) Error() string { return b.err.Error() }
func (b badRow) Unwrap() error { return b.err }

// scanRow reads one row; a record it cannot decode is a badRow error.
func scanRow(rows pgx.Rows, id storage.ID, withID bool) (row, error) {
	var (
		r                          row
		fp, res, cp                []byte
		state                      int32
		token, attempts            int64
		created, lease, exp, now   time.Time
		completed                  *time.Time
		tenant, namespace, idemKey string
	)
	dst := []any{&r.applied}
	if withID {
		dst = append(dst, &tenant, &namespace, &idemKey)
	}
	dst = append(dst, &fp, &state, &token, &attempts, &res, &cp, &created, &lease, &completed, &exp, &now)
	if err := rows.Scan(dst...); err != nil {
		return r, errDecode{fmt.Errorf("idem: reading a record: %w", err)}
	}
	if withID {
		id = storage.ID{Tenant: tenant, Namespace: namespace, Key: idemKey}
	}
	result, err := decodeResult(res)
	if err != nil {
		return r, badRow{id, storage.Damaged(id, errDecode{err})}
	}
	checkpoint, err := decodeCheckpoint(cp)
	if err != nil {
		return r, badRow{id, storage.Damaged(id, errDecode{err})}
	}
	if fp == nil {
		fp = []byte{}
	}
	rec := &storage.Record{
		ID:             id,
		Fingerprint:    fp,
		State:          storage.State(state),
		Token:          uint64(token),
		Result:         result,
		Checkpoint:     checkpoint,
		Attempts:       uint32(attempts),
		CreatedAt:      created,
		LeaseExpiresAt: lease,
		ExpiresAt:      exp,
	}
	if completed != nil {
		rec.CompletedAt = *completed
	}
	r.rec, r.now = rec, now
	return r, nil
}

// query runs one statement and hands each row to fn, retrying serialization
// failures, deadlocks and statements that never reached the server. A try
// can fail after some of its rows arrived (a serialization failure at
// commit, after RETURNING; CockroachDB streaming past its result buffer),
// so reset runs before each try to drop what fn kept of the last one.
func (s *Store) query(ctx context.Context, sql string, args []any, reset func(), fn func(pgx.Rows) error) error {
	return s.retry(ctx, func() error {
		reset()
		return s.queryOnce(ctx, sql, args, fn)
	})
}

// retry runs fn, the whole of one round trip, again after serialization
// failures, deadlocks and errors that prove nothing reached the server.
func (s *Store) retry(ctx context.Context, fn func() error) error {
	if s.closed.Load() {
		return storage.ErrClosed
	}
	backoff := time.Millisecond
	for try := 0; ; try++ {
		err := fn()
		if err == nil {
			return nil
		}
		if try < 10 && ctx.Err() == nil && !s.closed.Load() && retryable(err) {
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 100*time.Millisecond)
			continue
		}
		return s.mapErr(ctx, err)
	}
}

func (s *Store) queryOnce(ctx context.Context, sql string, args []any, fn func(pgx.Rows) error) error {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

func retryable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// serialization_failure, deadlock_detected: nothing was written.
		return pgErr.Code == "40001" || pgErr.Code == "40P01"
	}
	var de errDecode
	if errors.As(err, &de) {
		return false
	}
	// The statement never left this process (e.g. a dead pooled
	// connection), so running it again cannot apply it twice.
	return pgconn.SafeToRetry(err)
}

// mapErr turns a database error into idem's sentinels. Connection trouble
// is ErrUnavailable; nothing of the SQL text reaches the caller.
func (s *Store) mapErr(ctx context.Context, err error) error {
	if s.closed.Load() {
		return storage.ErrClosed
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var de errDecode
	if errors.As(err, &de) {
		return err
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "55P03":
			// lock_timeout (often set per role): nothing was written, and
			// only this record's lock was in the way.
			return fmt.Errorf("%w: %s answered SQLSTATE %s: %s%w", storage.ErrUnavailable, s.cfg.where, pgErr.Code, pgErr.Message, errLockWait)
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			strings.HasPrefix(pgErr.Code, "53"), // insufficient resources
			strings.HasPrefix(pgErr.Code, "57"), // operator intervention, statement timeout
			strings.HasPrefix(pgErr.Code, "58"), // system error (I/O) on the server
			pgErr.Code == "25006",               // read-only: a standby after failover, or maintenance
			pgErr.Code == "40001", pgErr.Code == "40P01", pgErr.Code == "40003":
			return fmt.Errorf("%w: %s answered SQLSTATE %s: %s", storage.ErrUnavailable, s.cfg.where, pgErr.Code, pgErr.Message)
		}
		return fmt.Errorf("idem: database %s answered SQLSTATE %s: %s", s.cfg.where, pgErr.Code, pgErr.Message)
	}
	return fmt.Errorf("%w: %s: %v", storage.ErrUnavailable, s.cfg.where, err)
}

// one runs a statement that answers at most one row.
func (s *Store) one(ctx context.Context, sql string, args []any, id storage.ID) (r row, ok bool, err error) {
	// A row that cannot be decoded is the answer only once the statement
	// ended well: its commit, after RETURNING, may still fail and be
	// retried (Delete answers such a row as removed).
	var bad error
	err = s.query(ctx, sql, args, func() { r, ok, bad = row{}, false, nil }, func(rows pgx.Rows) error {
		var err error
		r, err = scanRow(rows, id, false)
		ok = true
		if b := (badRow{}); errors.As(err, &b) {
			bad = err
			return nil
		}
		return err
	})
	if err == nil {
		err = bad
	}
	return r, ok && err == nil, err
}

// rerun accounts for a statement whose snapshot was stale and decides
// whether to try again.
func (s *Store) rerun(ctx context.Context, try int) error {
	s.reruns.Add(1)
	if err := ctx.Err(); err != nil {
		return err
	}
	if try >= maxReruns {
		return fmt.Errorf("%w: record at %s kept changing under concurrent writers", storage.ErrUnavailable, s.cfg.where)
	}
	if try > 3 {
		time.Sleep(time.Duration(try) * 100 * time.Microsecond)
	}
	return nil
}

// oneLine flattens pgx's multi-line connect errors for log lines.
func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
}

func micros(d time.Duration) int64 { return d.Microseconds() }

func fingerprint(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func resultBytes(r *storage.Result) []byte {
	if r == nil {
		r = &storage.Result{}
	}
	return encodeResult(r)
}

func (s *Store) Reserve(ctx context.Context, p storage.ReserveParams) (storage.Outcome, *storage.Record, error) {
	if s.co == nil {
		return s.reserve(ctx, p)
	}
	if s.closed.Load() {
		return 0, nil, storage.ErrClosed
	}
	return s.co.Reserve(ctx, p)
}

// errLockWait marks an ErrUnavailable that one record's row lock caused.
var errLockWait = lockWait{}

type lockWait struct{}

func (lockWait) Error() string { return "" }

// individually reports whether a failed batch should be re-run call by call:
// the database refused one item's data, or one item's row lock timed out.
func individually(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.Is(err, storage.ErrClosed) {
		return false
	}
	return !errors.Is(err, storage.ErrUnavailable) || errors.Is(err, errLockWait)
}

func (s *Store) reserve(ctx context.Context, p storage.ReserveParams) (storage.Outcome, *storage.Record, error) {
	args := []any{s.offset.Load(), p.Tenant, p.Namespace, p.Key, fingerprint(p.Fingerprint), micros(p.LeaseTTL), micros(max(p.Retention, p.LeaseTTL))}
	for try := 0; ; try++ {
		r, ok, err := s.one(ctx, sqlReserve, args, p.ID)
		if err != nil {
			return 0, nil, err
		}
		if ok && r.applied {
			return storage.OutcomeReserved, r.rec, nil
		}
		if ok {
			out, write, answer := storage.ApplyReserve(r.rec, p, r.now)
			if write == nil {
				return out, answer, nil
			}
		}
		// No row at all is the snapshot trap (sql.go): the conflict
		// was with a row committed after this statement's snapshot.
		if err := s.rerun(ctx, try); err != nil {
			return 0, nil, err
		}
	}
}

// mutate runs a single-record update; decide re-decides a row the update
// did not change, reporting whether it should have (a stale snapshot).
func (s *Store) mutate(ctx context.Context, sql string, args []any, id storage.ID, decide func(cur *storage.Record, now time.Time) (stale bool, answer *storage.Record, err error)) (*storage.Record, error) {
	for try := 0; ; try++ {
		r, ok, err := s.one(ctx, sql, args, id)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, storage.ErrNotFound
		}
		if r.applied {
			return r.rec, nil
		}
		stale, answer, err := decide(r.rec, r.now)
		if !stale {
			return answer, err
		}
		if err := s.rerun(ctx, try); err != nil {
			return nil, err
		}
	}
}

func (s *Store) Complete(ctx context.Context, p storage.CompleteParams) (*storage.Record, error) {
	if s.co == nil {
		return s.complete(ctx, p)
	}
	if s.closed.Load() {
		return nil, storage.ErrClosed
	}
	return s.co.Complete(ctx, p)
}

func (s *Store) complete(ctx context.Context, p storage.CompleteParams) (*storage.Record, error) {
	args := []any{s.offset.Load(), p.Tenant, p.Namespace, p.Key, int64(p.Token), resultBytes(p.Result), micros(p.Retention)}
	return s.mutate(ctx, sqlComplete, args, p.ID, func(cur *storage.Record, now time.Time) (bool, *storage.Record, error) {
		w, a, err := storage.ApplyComplete(cur, p, now)
		return w != nil, a, err
	})
}

func (s *Store) Release(ctx context.Context, id storage.ID, token uint64) (*storage.Record, error) {
	args := []any{s.offset.Load(), id.Tenant, id.Namespace, id.Key, int64(token)}
	return s.mutate(ctx, sqlRelease, args, id, func(cur *storage.Record, now time.Time) (bool, *storage.Record, error) {
		w, a, err := storage.ApplyRelease(cur, token, now)
		return w != nil, a, err
	})
}

func (s *Store) ExtendLease(ctx context.Context, id storage.ID, token uint64, ttl time.Duration) (*storage.Record, error) {
	args := []any{s.offset.Load(), id.Tenant, id.Namespace, id.Key, int64(token), micros(ttl)}
	return s.mutate(ctx, sqlExtend, args, id, func(cur *storage.Record, now time.Time) (bool, *storage.Record, error) {
		w, err := storage.ApplyExtendLease(cur, token, ttl, now)
		return w != nil, nil, err
	})
}

func (s *Store) Checkpoint(ctx context.Context, id storage.ID, token uint64, cp storage.Checkpoint) (*storage.Record, error) {
	args := []any{s.offset.Load(), id.Tenant, id.Namespace, id.Key, int64(token), encodeCheckpoint(&cp)}
	return s.mutate(ctx, sqlCheckpoint, args, id, func(cur *storage.Record, now time.Time) (bool, *storage.Record, error) {
		w, err := storage.ApplyCheckpoint(cur, token, cp, now)
		return w != nil, nil, err
	})
}

func (s *Store) ForceRelease(ctx context.Context, id storage.ID) (*storage.Record, error) {
	args := []any{s.offset.Load(), id.Tenant, id.Namespace, id.Key}
	return s.mutate(ctx, sqlForceRelease, args, id, func(cur *storage.Record, now time.Time) (bool, *storage.Record, error) {
		w, a, err := storage.ApplyForceRelease(cur, now)
		return w != nil, a, err
	})
}

func (s *Store) Lookup(ctx context.Context, id storage.ID) (*storage.Record, error) {
	r, ok, err := s.one(ctx, sqlLookup, []any{s.offset.Load(), id.Tenant, id.Namespace, id.Key}, id)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, storage.ErrNotFound
	}
	return r.rec, nil
}

func (s *Store) Delete(ctx context.Context, id storage.ID) (*storage.Record, error) {
	r, ok, err := s.one(ctx, sqlDelete, []any{s.offset.Load(), id.Tenant, id.Namespace, id.Key}, id)
	if b := (badRow{}); errors.As(err, &b) {
		// The row is deleted; what it held could not be read.
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	// An expired row was absent already; deleting it early is harmless.
	if !ok || !r.rec.Live(r.now) {
		return nil, storage.ErrNotFound
	}
	return r.rec, nil
}

// batchRows runs a batch statement and indexes its rows by ID; a row it
// cannot decode is that item's error in bad, not the whole call's.
func (s *Store) batchRows(ctx context.Context, sql string, args []any) (got map[storage.ID]row, bad map[storage.ID]error, err error) {
	reset := func() { got, bad = map[storage.ID]row{}, map[storage.ID]error{} }
	err = s.query(ctx, sql, args, reset, func(rows pgx.Rows) error {
		r, err := scanRow(rows, storage.ID{}, true)
		var b badRow
		if errors.As(err, &b) {
			bad[b.id] = b.err
			return nil
		}
		if err != nil {
			return err
		}
		got[r.rec.ID] = r
		return nil
	})
	return got, bad, err
}

// order returns the item indexes sorted by ID, so concurrent batches lock
// rows in the same order and do not deadlock each other. Items of one ID
// keep their order.
func order(n int, id func(int) storage.ID) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		x, y := id(a), id(b)
		return strings.Compare(x.Tenant+"\x00"+x.Namespace+"\x00"+x.Key, y.Tenant+"\x00"+y.Namespace+"\x00"+y.Key)
	})
	return idx
}

// firsts splits pending (as order sorts it) into the first item of each ID,
// which one statement can take, and the repeats, which wait for a later
// round: a statement cannot touch one row twice, and each repeat must see
// what the item before it did, as with single calls in a row.
func firsts(pending []int, id func(int) storage.ID) (run, wait []int) {
	for j, i := range pending {
		if j > 0 && id(pending[j-1]) == id(i) {
			wait = append(wait, i)
			continue
		}
		run = append(run, i)
	}
	return run, wait
}

func (s *Store) BatchReserve(ctx context.Context, items []storage.ReserveParams) ([]storage.ReserveResult, error) {
	out := make([]storage.ReserveResult, len(items))
	id := func(i int) storage.ID { return items[i].ID }
	pending := order(len(items), id)
	for round, reruns := 0, 0; len(pending) > 0; round++ {
		run, wait := firsts(pending, id)
		n := len(run)
		tenants, namespaces, keys := make([]string, n), make([]string, n), make([]string, n)
		fps, leases, holds := make([][]byte, n), make([]int64, n), make([]int64, n)
		for j, i := range run {
			p := items[i]
			tenants[j], namespaces[j], keys[j] = p.Tenant, p.Namespace, p.Key
			fps[j], leases[j], holds[j] = fingerprint(p.Fingerprint), micros(p.LeaseTTL), micros(max(p.Retention, p.LeaseTTL))
		}
		got, bad, err := s.batchRows(ctx, sqlBatchReserve, []any{s.offset.Load(), tenants, namespaces, keys, fps, leases, holds})
		if err != nil {
			if round == 0 {
				return nil, err
			}
			// Earlier rounds committed their items: answer those, and
			// fail only the items still pending.
			for _, i := range pending {
				out[i] = storage.ReserveResult{Err: err}
			}
			return out, nil
		}
		again := make(map[int]bool, len(wait))
		for _, i := range wait {
			again[i] = true
		}
		stale := false
		for _, i := range run {
			r, ok := got[items[i].ID]
			switch {
			case ok && r.applied:
				out[i] = storage.ReserveResult{Outcome: storage.OutcomeReserved, Record: r.rec}
				continue
			case ok:
				o, write, answer := storage.ApplyReserve(r.rec, items[i], r.now)
				if write == nil {
					out[i] = storage.ReserveResult{Outcome: o, Record: answer}
					continue
				}
			case bad[items[i].ID] != nil:
				out[i] = storage.ReserveResult{Err: bad[items[i].ID]}
				continue
			}
			again[i], stale = true, true
		}
		pending = slices.DeleteFunc(pending, func(i int) bool { return !again[i] })
		if stale {
			if err := s.rerun(ctx, reruns); err != nil {
				for _, i := range pending {
					out[i] = storage.ReserveResult{Err: err}
				}
				return out, nil
			}
			reruns++
		}
	}
	return out, nil
}

func (s *Store) BatchComplete(ctx context.Context, items []storage.CompleteParams) ([]storage.CompleteResult, error) {
	out := make([]storage.CompleteResult, len(items))
	id := func(i int) storage.ID { return items[i].ID }
	pending := order(len(items), id)
	type answer struct {
		r   *row
		err error // the record could not be decoded
	}
	for round, reruns := 0, 0; len(pending) > 0; round++ {
		run, wait := firsts(pending, id)
		off := s.offset.Load()
		got := make([]answer, len(run))
		err := s.retry(ctx, func() error {
			// A new batch each try: pgx binds a sent batch's queries to
			// the statements prepared on its connection, and a retry may
			// get another connection.
			batch := &pgx.Batch{}
			for _, i := range run {
				p := items[i]
				batch.Queue(sqlComplete, off, p.Tenant, p.Namespace, p.Key, int64(p.Token), resultBytes(p.Result), micros(p.Retention))
			}
			br := s.pool.SendBatch(ctx, batch)
			for j, i := range run {
				rows, err := br.Query()
				if err != nil {
					br.Close()
					return err
				}
				got[j] = answer{}
				for rows.Next() {
					r, err := scanRow(rows, items[i].ID, false)
					var b badRow
					switch {
					case errors.As(err, &b):
						got[j] = answer{err: b.err}
					case err != nil:
						rows.Close()
						br.Close()
						return err
					default:
						got[j] = answer{r: &r}
					}
				}
				rows.Close()
				if err := rows.Err(); err != nil {
					br.Close()
					return err
				}
			}
			return br.Close()
		})
		if err != nil {
			if round == 0 {
				return nil, err
			}
			for _, i := range pending {
				out[i] = storage.CompleteResult{Err: err}
			}
			return out, nil
		}
		again := make(map[int]bool, len(wait))
		for _, i := range wait {
			again[i] = true
		}
		stale := false
		for j, i := range run {
			r := got[j].r
			switch {
			case got[j].err != nil:
				out[i] = storage.CompleteResult{Err: got[j].err}
			case r == nil:
				out[i] = storage.CompleteResult{Err: storage.ErrNotFound}
			case r.applied:
				out[i] = storage.CompleteResult{Record: r.rec}
			default:
				write, answer, err := storage.ApplyComplete(r.rec, items[i], r.now)
				if write != nil {
					again[i], stale = true, true
					continue
				}
				out[i] = storage.CompleteResult{Record: answer, Err: err}
			}
		}
		pending = slices.DeleteFunc(pending, func(i int) bool { return !again[i] })
		if stale {
			if err := s.rerun(ctx, reruns); err != nil {
				for _, i := range pending {
					out[i] = storage.CompleteResult{Err: err}
				}
				return out, nil
			}
			reruns++
		}
	}
	return out, nil
}

func (s *Store) List(ctx context.Context, p storage.ListParams) ([]*storage.Record, bool, error) {
	var recs []*storage.Record
	err := s.query(ctx, s.sqlList, []any{s.offset.Load(), p.Tenant, p.Namespace, p.After, p.KeyPrefix, p.Limit + 1}, func() { recs = nil }, func(rows pgx.Rows) error {
		r, err := scanRow(rows, storage.ID{}, true)
		if err != nil {
			return err
		}
		recs = append(recs, r.rec)
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	if len(recs) > p.Limit {
		return recs[:p.Limit], true, nil
	}
	return recs, false, nil
}

func (s *Store) Stats(ctx context.Context, tenant, namespace string) ([]storage.StatsRow, error) {
	var out []storage.StatsRow
	err := s.query(ctx, sqlStats, []any{s.offset.Load(), tenant, namespace}, func() { out = nil }, func(rows pgx.Rows) error {
		var r storage.StatsRow
		var state int32
		if err := rows.Scan(&r.Namespace, &state, &r.Count); err != nil {
			return errDecode{fmt.Errorf("idem: reading stats: %w", err)}
		}
		r.State = storage.State(state)
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, err
	}
	storage.SortStats(out)
	return out, nil
}

func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return storage.ErrClosed
	}
	if err := s.pool.Ping(ctx); err != nil {
		return s.mapErr(ctx, err)
	}
	return nil
}

func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return storage.ErrClosed
	}
	s.stopSweep()
	s.sweepWG.Wait()
	s.pool.Close()
	return nil
}
