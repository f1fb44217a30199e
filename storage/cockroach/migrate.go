package cockroach

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/idemhq/idem/storage"
)

// Schema errors Open and Migrate return, wrapped with the details.
var (
	// ErrSchemaNewer: the database was migrated by a newer idemd; this
	// binary refuses to touch it rather than misread it.
	ErrSchemaNewer = errors.New("idem: database schema is newer than this binary")
	// ErrSchemaOutdated: migrations are pending; run `idemd migrate`.
	ErrSchemaOutdated = errors.New("idem: database schema needs migrating")
)

//go:embed migrations
var migrationFiles embed.FS

// A migration set is one directory of migrations with its own goose version
// table. The shared set runs on both databases; each dialect has its own
// set on top, and the multi-region set is opt-in.
type migrationSet struct {
	dir   string
	table string
}

var (
	setShared      = migrationSet{"shared", "idem_schema_version"}
	setPostgres    = migrationSet{"postgres", "idem_schema_version_postgres"}
	setCockroach   = migrationSet{"cockroach", "idem_schema_version_cockroach"}
	setMultiRegion = migrationSet{"multiregion", "idem_schema_version_multiregion"}
)

// migrationLockID is idem's PostgreSQL advisory lock, held while migrating
// so replicas started together migrate one at a time.
const migrationLockID = 0x1de3_0000_0001

func setsFor(dialect string) []migrationSet {
	if dialect == DialectCockroach {
		return []migrationSet{setShared, setCockroach}
	}
	return []migrationSet{setShared, setPostgres}
}

func (m migrationSet) fs() fs.FS {
	sub, err := fs.Sub(migrationFiles, path.Join("migrations", m.dir))
	if err != nil {
		panic(err) // the directories are embedded at build time
	}
	return sub
}

// latest is the highest version this binary has for the set.
func (m migrationSet) latest() int64 {
	entries, err := fs.ReadDir(m.fs(), ".")
	if err != nil {
		panic(err)
	}
	var v int64
	for _, e := range entries {
		prefix, _, ok := strings.Cut(e.Name(), "_")
		if n, err := strconv.ParseInt(prefix, 10, 64); ok && err == nil {
			v = max(v, n)
		}
	}
	return v
}

// dbVersion reads the set's version without locking or creating anything;
// 0 when the set was never applied.
func (m migrationSet) dbVersion(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	var v int64
	err := pool.QueryRow(ctx, `SELECT coalesce(max(version_id), 0) FROM `+m.table+` WHERE is_applied`).Scan(&v)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
		return 0, nil
	}
	return v, err
}

// checkSchema refuses a database whose schema is not exactly the one this
// binary knows.
func checkSchema(ctx context.Context, pool *pgxpool.Pool, dialect, where string) error {
	for _, set := range setsFor(dialect) {
		v, err := set.dbVersion(ctx, pool)
		if err != nil {
			return fmt.Errorf("idem: reading the schema version of %s: %w", where, err)
		}
		if want := set.latest(); v > want {
			return fmt.Errorf("%w: %s has %s schema version %d, this idemd knows up to %d; upgrade idemd", ErrSchemaNewer, where, set.dir, v, want)
		} else if v < want {
			return fmt.Errorf("%w: %s has %s schema version %d, this idemd needs %d; run `idemd migrate` or start idemd with --migrate", ErrSchemaOutdated, where, set.dir, v, want)
		}
	}
	if dialect == DialectCockroach {
		v, err := setMultiRegion.dbVersion(ctx, pool)
		if err != nil {
			return fmt.Errorf("idem: reading the schema version of %s: %w", where, err)
		}
		if want := setMultiRegion.latest(); v > want {
			return fmt.Errorf("%w: %s has %s schema version %d, this idemd knows up to %d; upgrade idemd", ErrSchemaNewer, where, setMultiRegion.dir, v, want)
		}
	}
	return nil
}

// Migrate brings the schema of the database rawURL names up to this
// binary's version: the shared migrations, then the dialect's own (row-level
// TTL on CockroachDB, the sweeper's index on PostgreSQL), then, with URL
// parameter multi_region=true on CockroachDB, the multi-region layout.
//
// Several replicas may run it at once: on PostgreSQL they take turns under
// an advisory lock; on CockroachDB, which has none, every migration is a
// single idempotent DDL statement, so a repeat or an interrupted run is
// finished by the next one. A database migrated by a newer binary is
// refused with ErrSchemaNewer.
func Migrate(ctx context.Context, rawURL string, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.Default()
	}
	u, err := storage.ParseURL(rawURL)
	if err != nil {
		return err
	}
	cfg, err := parseConfig(u)
	if err != nil {
		return err
	}
	// statement_timeout is for serving: DDL waits for locks and rewrites
	// tables, and a cut migration leaves every replica refusing to start.
	// ctx bounds the run instead.
	delete(cfg.pool.ConnConfig.RuntimeParams, "statement_timeout")
	pool, dialect, _, err := connect(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer pool.Close()
	sets := setsFor(dialect)
	if cfg.multiRegion {
		if dialect != DialectCockroach {
			return fmt.Errorf("idem: %s=true needs CockroachDB, %s is PostgreSQL", ParamMultiRegion, cfg.where)
		}
		sets = append(sets, setMultiRegion)
	}
	// Replicas started with --migrate against a database that is already
	// current skip the lock entirely.
	current := true
	for _, set := range sets {
		v, err := set.dbVersion(ctx, pool)
		if err != nil {
			return fmt.Errorf("idem: reading the schema version of %s: %w", cfg.where, err)
		}
		if want := set.latest(); v > want {
			return fmt.Errorf("%w: %s has %s schema version %d, this idemd knows up to %d; upgrade idemd", ErrSchemaNewer, cfg.where, set.dir, v, want)
		} else if v < want {
			current = false
		}
	}
	if current {
		logger.Info("idem: store schema is up to date", "store", cfg.where, "dialect", dialect)
		return nil
	}
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	for _, set := range sets {
		opts := []goose.ProviderOption{
			goose.WithTableName(set.table),
			goose.WithDisableGlobalRegistry(true),
		}
		if dialect == DialectPostgres {
			locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(migrationLockID), lock.WithLockTimeout(1, 600))
			if err != nil {
				return fmt.Errorf("idem: migration lock: %w", err)
			}
			opts = append(opts, goose.WithSessionLocker(locker))
		}
		p, err := goose.NewProvider(goose.DialectPostgres, db, set.fs(), opts...)
		if err != nil {
			return fmt.Errorf("idem: loading %s migrations: %w", set.dir, err)
		}
		cur, err := p.GetDBVersion(ctx)
		if err != nil {
			return fmt.Errorf("idem: reading %s schema version of %s: %w", set.dir, cfg.where, err)
		}
		if want := set.latest(); cur > want {
			return fmt.Errorf("%w: %s has %s schema version %d, this idemd knows up to %d; upgrade idemd", ErrSchemaNewer, cfg.where, set.dir, cur, want)
		}
		results, err := p.Up(ctx)
		if err != nil {
			return fmt.Errorf("idem: applying %s migrations to %s: %w", set.dir, cfg.where, err)
		}
		for _, r := range results {
			logger.Info("idem: applied migration", "store", cfg.where, "set", set.dir, "version", r.Source.Version, "file", path.Base(r.Source.Path), "took", r.Duration.String())
		}
	}
	logger.Info("idem: store schema is up to date", "store", cfg.where, "dialect", dialect)
	return nil
}
