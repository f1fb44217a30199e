// Command idemd serves idem's gRPC API. See package server/idemd.
//
//	idemd [serve] [--listen 127.0.0.1:50051] [--store pebble://./idem-data] …
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/idemhq/idem/server/idemd"
	"github.com/idemhq/idem/storage/cockroach"

	// TLS, authentication, logs, tracing, metrics and limits.
	_ "github.com/idemhq/idem/server/idemdext"
	_ "github.com/idemhq/idem/server/policy" // --policy: namespaces routed to stores, reloaded on SIGHUP

	// The backends idemd offers; each registers its URL scheme.
	_ "github.com/idemhq/idem/storage/memory"
	_ "github.com/idemhq/idem/storage/pebble"
	_ "github.com/idemhq/idem/storage/redis"
)

// The SQL backend's schema is versioned: idemd migrate and --migrate apply it.
func init() {
	idemd.RegisterMigrator("postgres", cockroach.Migrate)
	idemd.RegisterMigrator("postgresql", cockroach.Migrate)
}

func main() {
	// SIGHUP reloads the policy and credential files once idemd serves; a
	// SIGHUP before that (a config push racing a start) must not kill it.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGHUP)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	code := idemd.Main(ctx, os.Args[1:], os.LookupEnv, os.Stderr)
	stop()
	os.Exit(code)
}
