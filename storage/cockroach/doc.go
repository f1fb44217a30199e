// Package cockroach is idem's SQL backend for CockroachDB and PostgreSQL,
// opened by store URLs postgres://… and postgresql://…. It speaks the
// PostgreSQL wire protocol through pgx and detects at connect, with SELECT
// version(), which of the two it talks to.
//
// Every operation is one SQL statement and one round trip: the state machine
// of package storage is encoded in INSERT … ON CONFLICT DO UPDATE … WHERE and
// UPDATE … WHERE statements that read the database's now(), never idemd's
// clock, so any number of idemd replicas may share one database. Batches of
// up to 1,000 items are one round trip too: BatchReserve one statement over
// unnested arrays, BatchComplete the single-row Complete pipelined in one
// pgx batch. No operation needs a multi-statement transaction, so neither
// cockroach-go's retry loop nor a PostgreSQL one is needed; statements that
// fail with a serialization failure or deadlock are simply run again.
//
// The schema is embedded and versioned (see Migrate); CockroachDB gets
// row-level TTL and an opt-in multi-region layout, PostgreSQL an in-process
// sweeper that deletes expired rows in bounded batches.
package cockroach
