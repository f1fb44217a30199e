// Package idemd is the idemd daemon behind cmd/idemd: its configuration
// (Config, DefaultConfig, RegisterFlags, every flag also read from the
// environment as IDEM_<FLAG>), its serve loop (store, gRPC server, health,
// metrics, graceful shutdown) and its subcommands.
//
// It knows no backend: the binary blank-imports the storage packages it
// offers and registers, with RegisterMigrator, the schema migrations of
// those that have one, which `idemd migrate` and `idemd --migrate` run.
// Packages that add features to the daemon (authentication, tracing, …)
// plug in through RegisterExtension, and new subcommands through
// RegisterCommand, so cmd/idemd stays a thin main.
//
// With --metrics-listen, /metrics serves server/observe's registry: the
// gRPC server metrics, idem's own (the store wrapped by
// observe.InstrumentStore) and idem_store_info{store,dialect}. A SQL
// store's dialect (postgres, cockroachdb) is also logged at start and sent
// on every Lookup response as the header idem-store-dialect.
package idemd
