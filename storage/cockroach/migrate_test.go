package cockroach

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/idemhq/idem/storage"
)

func execSQL(t *testing.T, rawURL, sql string, args ...any) {
	t.Helper()
	ctx := testCtx(t)
	conn, err := pgx.Connect(ctx, rawURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func queryInt(t *testing.T, rawURL, sql string, args ...any) int64 {
	t.Helper()
	ctx := testCtx(t)
	conn, err := pgx.Connect(ctx, rawURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int64
	if err := conn.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// usable opens the store and runs one Reserve.
func usable(t *testing.T, rawURL string) {
	t.Helper()
	s := openTest(t, rawURL)
	defer s.Close()
	out, _, err := s.Reserve(testCtx(t), storage.ReserveParams{ID: storage.ID{Tenant: "t", Namespace: "ns", Key: "k"}, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour})
	if err != nil || out != storage.OutcomeReserved {
		t.Fatalf("Reserve() after migrating = %v, %v; want RESERVED", out, err)
	}
}

func TestSchemaChecks(t *testing.T) {
	base := postgresURL(t)
	t.Run("NotMigrated", func(t *testing.T) {
		u := freshSchema(t, base)
		_, err := Open(testCtx(t), u, quiet)
		if !errors.Is(err, ErrSchemaOutdated) || !strings.Contains(err.Error(), "idemd migrate") {
			t.Fatalf("Open() error = %v, want ErrSchemaOutdated telling to run idemd migrate", err)
		}
	})
	for _, table := range []string{setShared.table, setPostgres.table} {
		t.Run("NewerThanBinary/"+table, func(t *testing.T) {
			u := migratedURL(t, base)
			execSQL(t, u, `INSERT INTO `+table+` (version_id, is_applied) VALUES (9999, true)`)
			_, err := Open(testCtx(t), u, quiet)
			if !errors.Is(err, ErrSchemaNewer) || !strings.Contains(err.Error(), "9999") {
				t.Errorf("Open() error = %v, want ErrSchemaNewer naming version 9999", err)
			}
			err = Migrate(testCtx(t), u, quiet)
			if !errors.Is(err, ErrSchemaNewer) {
				t.Errorf("Migrate() error = %v, want ErrSchemaNewer", err)
			}
		})
	}
}

// applySet runs one migration set alone, as a run interrupted after it would
// have left the database.
func applySet(t *testing.T, rawURL string, set migrationSet) {
	t.Helper()
	ctx := testCtx(t)
	pool, err := pgxpool.New(ctx, rawURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, set.fs(), goose.WithTableName(set.table), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("applying %s: %v", set.dir, err)
	}
}

func TestMigrateInterrupted(t *testing.T) {
	base := postgresURL(t)
	t.Run("AfterFirstSet", func(t *testing.T) {
		u := freshSchema(t, base)
		applySet(t, u, setShared)
		if _, err := Open(testCtx(t), u, quiet); !errors.Is(err, ErrSchemaOutdated) {
			t.Fatalf("Open() half-migrated error = %v, want ErrSchemaOutdated", err)
		}
		if err := Migrate(testCtx(t), u, quiet); err != nil {
			t.Fatalf("Migrate() error = %v, want nil", err)
		}
		usable(t, u)
	})
	t.Run("DDLDoneVersionNotRecorded", func(t *testing.T) {
		// A crash between a non-transactional DDL and goose recording it
		// (CockroachDB's case): the DDL must be safe to run again.
		u := freshSchema(t, base)
		for _, set := range []migrationSet{setShared, setPostgres} {
			b, err := migrationFiles.ReadFile("migrations/" + set.dir + "/" + firstFile(t, set))
			if err != nil {
				t.Fatal(err)
			}
			up, _, _ := strings.Cut(string(b), "-- +goose Down")
			execSQL(t, u, up)
		}
		if err := Migrate(testCtx(t), u, quiet); err != nil {
			t.Fatalf("Migrate() error = %v, want nil", err)
		}
		usable(t, u)
	})
	t.Run("CancelledAtEveryPoint", func(t *testing.T) {
		u := freshSchema(t, base)
		interrupted := 0
		for d := time.Millisecond; ; d += 2 * time.Millisecond {
			ctx, cancel := context.WithTimeout(context.Background(), d)
			err := Migrate(ctx, u, quiet)
			cancel()
			if err == nil {
				break
			}
			interrupted++
			if d > 10*time.Second {
				t.Fatalf("Migrate() kept failing: %v", err)
			}
		}
		if interrupted == 0 {
			t.Fatal("no Migrate() run was interrupted; the test proves nothing")
		}
		if err := Migrate(testCtx(t), u, quiet); err != nil {
			t.Fatalf("Migrate() after %d interrupted runs error = %v, want nil", interrupted, err)
		}
		usable(t, u)
		t.Logf("%d interrupted runs, then a complete one", interrupted)
	})
}

func firstFile(t *testing.T, set migrationSet) string {
	t.Helper()
	entries, err := migrationFiles.ReadDir("migrations/" + set.dir)
	if err != nil || len(entries) == 0 {
		t.Fatalf("migrations/%s: %v", set.dir, err)
	}
	return entries[0].Name()
}

// TestMigrateConcurrently: replicas starting together with --migrate apply
// each migration exactly once.
func TestMigrateConcurrently(t *testing.T) {
	u := freshSchema(t, postgresURL(t))
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- Migrate(testCtx(t), u, quiet)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Migrate() error = %v, want nil", err)
		}
	}
	for _, set := range []migrationSet{setShared, setPostgres} {
		if n := queryInt(t, u, `SELECT count(*) FROM `+set.table+` WHERE version_id = $1`, set.latest()); n != 1 {
			t.Errorf("%s version %d recorded %d times, want 1", set.dir, set.latest(), n)
		}
	}
	usable(t, u)
}

// TestMigrationFilesOneDDL holds every embedded migration to the rule that
// makes concurrent and interrupted runs safe on CockroachDB, which has no
// advisory lock: one statement per migration, and one that can run twice.
func TestMigrationFilesOneDDL(t *testing.T) {
	for _, set := range []migrationSet{setShared, setPostgres, setCockroach, setMultiRegion} {
		entries, err := migrationFiles.ReadDir("migrations/" + set.dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			t.Run(set.dir+"/"+e.Name(), func(t *testing.T) {
				b, _ := migrationFiles.ReadFile("migrations/" + set.dir + "/" + e.Name())
				up, _, ok := strings.Cut(string(b), "-- +goose Down")
				if !ok || !strings.Contains(up, "-- +goose Up") {
					t.Fatal("missing -- +goose Up or Down section")
				}
				var stmts []string
				for _, line := range strings.Split(up, "\n") {
					if strings.HasPrefix(strings.TrimSpace(line), "--") {
						continue
					}
					stmts = append(stmts, line)
				}
				body := strings.TrimSpace(strings.Join(stmts, "\n"))
				if n := strings.Count(body, ";"); n != 1 || !strings.HasSuffix(body, ";") {
					t.Errorf("Up section has %d statements, want exactly 1", n)
				}
				idempotent := strings.Contains(body, "IF NOT EXISTS") || strings.Contains(body, " SET (") || strings.Contains(body, "SET LOCALITY")
				if !idempotent {
					t.Errorf("Up statement %q cannot safely run twice", body)
				}
			})
		}
	}
}
