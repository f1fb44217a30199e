// Package idemd is the idemd daemon behind cmd/idemd: its configuration
// (Config, DefaultConfig, RegisterFlags, every flag also read from the
// environment as IDEM_<FLAG>), its serve loop (store, gRPC server, health,
// metrics, graceful shutdown) and its subcommands.
//
// It knows no backend: the binary blank-imports the storage packages it
// offers, and packages that add features to the daemon (authentication,
// tracing, …) plug in through RegisterExtension, and new subcommands
// (idemd migrate) through RegisterCommand, so cmd/idemd stays a thin main.
package idemd
