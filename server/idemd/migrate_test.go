package idemd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// withMigrator registers m for memory:// for one test.
func withMigrator(t *testing.T, m Migrator) {
	t.Helper()
	RegisterMigrator("memory", m)
	t.Cleanup(func() {
		migMu.Lock()
		delete(migrators, "memory")
		migMu.Unlock()
	})
}

func noEnv(string) (string, bool) { return "", false }

func TestMigrateCommandRunsTheSchemesMigrator(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	var got atomic.Value
	withMigrator(t, func(_ context.Context, storeURL string, _ *slog.Logger) error {
		got.Store(storeURL)
		return nil
	})
	var stderr lineWriter
	env := func(k string) (string, bool) {
		if k == "IDEM_STORE" {
			return "MEMORY://from-env", true
		}
		return "", false
	}
	if code := Main(ctx, []string{"migrate"}, env, &stderr); code != ExitOK {
		t.Fatalf("Main(migrate) = %d, want 0; stderr %q", code, stderr)
	}
	if got.Load() != "MEMORY://from-env" {
		t.Errorf("migrator got %v, want the store URL from IDEM_STORE", got.Load())
	}
}

func TestMigrateCommandFailureIsOneLine(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	withMigrator(t, func(context.Context, string, *slog.Logger) error {
		return errors.New("idem: lock timeout\nwhile applying 00002")
	})
	var stderr lineWriter
	code := Main(ctx, []string{"migrate", "--store", "memory://"}, noEnv, &stderr)
	want := "idemd: cannot migrate store memory://: lock timeout; while applying 00002\n"
	if code != ExitUsage || string(stderr) != want {
		t.Errorf("Main(migrate) = %d, %q; want %d, %q", code, stderr, ExitUsage, want)
	}
}

func TestServeMigratesFirstWithFlag(t *testing.T) {
	tests := []struct {
		name      string
		migrate   bool
		err       error
		wantCalls int64
		wantErr   string
	}{
		{"without --migrate", false, nil, 0, ""},
		{"with --migrate", true, nil, 1, ""},
		{"failing migration stops start-up", true, errors.New("idem: schema is newer"), 1, "cannot migrate store memory://: schema is newer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // serve starts and stops at once
			var calls atomic.Int64
			withMigrator(t, func(context.Context, string, *slog.Logger) error {
				calls.Add(1)
				return tt.err
			})
			cfg := memoryConfig()
			cfg.Migrate = tt.migrate
			err := Serve(ctx, cfg, slog.New(slog.DiscardHandler))
			if calls.Load() != tt.wantCalls {
				t.Errorf("migrator ran %d times, want %d", calls.Load(), tt.wantCalls)
			}
			var se *startError
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Serve() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.As(err, &se)):
				t.Errorf("Serve() = %v, want a start error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestMigrateWithoutMigrator(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	var stderr lineWriter
	if code := Main(ctx, []string{"migrate", "--store", "memory://"}, noEnv, &stderr); code != ExitOK || !strings.Contains(string(stderr), "nothing to do") {
		t.Errorf("Main(migrate) = %d, %q; want 0 and a line saying there is nothing to do", code, stderr)
	}
}

// A SIGTERM during idemd migrate exited 2 with "context canceled", which
// reads as a configuration to fix. It is a stop, but not a success: a
// migration Job (restartPolicy OnFailure) or `idemd migrate && roll out`
// must not go on as if the schema were current, so it exits 1 and says
// to run it again.
func TestSignalDuringMigrateIsAStopNotASuccess(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{})
	withMigrator(t, func(ctx context.Context, _ string, _ *slog.Logger) error {
		close(started)
		<-ctx.Done()
		return fmt.Errorf("idem: applying 00002: %w", ctx.Err())
	})
	var stderr lineWriter
	code := make(chan int, 1)
	go func() { code <- Main(ctx, []string{"migrate", "--store", "memory://"}, noEnv, &stderr) }()
	select {
	case <-started:
	case <-time.After(defaultTestTimeout):
		t.Fatal("the migrator never ran")
	}
	cancel()
	var got int
	select {
	case got = <-code:
	case <-time.After(defaultTestTimeout):
		t.Fatal("Main(migrate) did not return after the signal")
	}
	want := "idemd: stopped by a signal before the migrations finished (cannot migrate store memory://: applying 00002: context canceled); run idemd migrate again\n"
	if got != ExitError || string(stderr) != want {
		t.Fatalf("Main(migrate) = %d, %q; want %d, %q", got, stderr, ExitError, want)
	}
}
