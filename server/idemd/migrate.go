package idemd

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"sync"

	"github.com/idemhq/idem/storage"
)

// Migrator brings the schema of the store storeURL names up to the
// binary's version. It must be safe when several replicas run it at once
// and a no-op when the schema is current.
type Migrator func(ctx context.Context, storeURL string, log *slog.Logger) error

var (
	migMu     sync.Mutex
	migrators = map[string]Migrator{}
)

// RegisterMigrator makes m the migrator of store URLs with scheme. Backend
// wiring calls it from init (cmd/idemd for the SQL backend); schemes
// without one have no migrations.
func RegisterMigrator(scheme string, m Migrator) {
	migMu.Lock()
	defer migMu.Unlock()
	migrators[strings.ToLower(scheme)] = m
}

// migratorFor returns the migrator of storeURL's scheme, or nil.
func migratorFor(storeURL string) (Migrator, error) {
	u, err := url.Parse(storeURL)
	if err != nil {
		return nil, fmt.Errorf("store URL %s cannot be parsed", storage.Redacted(storeURL))
	}
	migMu.Lock()
	defer migMu.Unlock()
	return migrators[strings.ToLower(u.Scheme)], nil
}

// StoreNamer is an Extension that sends calls to stores besides --store
// (the policy file's): idemd migrate and --migrate migrate those too.
type StoreNamer interface {
	// StoreURLs lists the extension's store URLs under cfg; an error
	// stops the migration with exit code 2.
	StoreURLs(cfg Config) ([]string, error)
}

// migrateAll migrates --store and every store the extensions name, each
// once, in that order.
func migrateAll(ctx context.Context, cfg Config, exts []Extension, log *slog.Logger) error {
	urls := []string{cfg.Store}
	for _, e := range exts {
		n, ok := e.(StoreNamer)
		if !ok {
			continue
		}
		more, err := n.StoreURLs(cfg)
		if err != nil {
			return err
		}
		urls = append(urls, more...)
	}
	seen := map[string]bool{}
	for _, u := range urls {
		if u == "" || seen[u] {
			continue
		}
		seen[u] = true
		ran, err := migrate(ctx, u, log)
		if err != nil {
			return err
		}
		if !ran {
			log.Info("store has no schema migrations; nothing to do", "store", storage.Redacted(u))
		}
	}
	return nil
}

// migrate runs the store's migrator; ran is false when it has none.
func migrate(ctx context.Context, storeURL string, log *slog.Logger) (ran bool, err error) {
	m, err := migratorFor(storeURL)
	if err != nil || m == nil {
		return false, err
	}
	if err := m(ctx, storeURL, log); err != nil {
		return true, fmt.Errorf("cannot migrate store %s: %s", storage.Redacted(storeURL), trimIdem(err))
	}
	return true, nil
}

func init() {
	RegisterCommand("migrate", Command{
		Summary: "apply the pending schema migrations of --store and of the policy file's stores, and exit",
		Run:     migrateMain,
	})
}

// migrateMain is `idemd migrate`: the same flags and environment as serve,
// so a deployment's migration job shares the servers' configuration.
func migrateMain(ctx context.Context, args []string, env func(string) (string, bool), stderr io.Writer) int {
	cfg, exts, code, ok := parseFlags("migrate", args, env, stderr)
	if !ok {
		return code
	}
	if cfg.Store == "" {
		fail(stderr, fmt.Errorf("--store is empty"))
		return ExitUsage
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	warnUnknownEnv(log, cfg)
	if err := migrateAll(ctx, cfg, exts, log); err != nil {
		// A SIGTERM mid-migration is an operator's (or a node drain's)
		// stop, not a configuration to fix; but the schema is not known
		// to be current, so it is no success either: a migration Job must
		// run again, and `idemd migrate && roll out` must not roll out.
		if ctx.Err() != nil {
			fail(stderr, fmt.Errorf("stopped by a signal before the migrations finished (%s); run idemd migrate again", trimIdem(err)))
			return ExitError
		}
		fail(stderr, err)
		return ExitUsage
	}
	return ExitOK
}
