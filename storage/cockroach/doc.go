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
// # Coalescing
//
// Concurrent Reserves share statements, and so do concurrent Completes, as
// a database's group commit shares a log flush: while one batch per kind
// is in flight (the coalesce URL parameter, default 1), calls that arrive
// queue, and when it finishes the next batch takes them all (up to 256, a
// record at most once) in one BatchReserve statement or one BatchComplete
// pipeline. A call that finds nothing in flight runs at once, alone, with
// the single-record statement, so an idle store adds no wait. Each call
// keeps its own answer and its own error; a batch the database refuses for
// one item's data runs again item by item, so only that call fails. With
// 50 callers on PostgreSQL it took Reserve+Complete from 2,503 to 4,696
// pairs per second (bench/pgbench.sh, 2 cores): the write, wake-up, parse,
// plan and commit of each round trip were the cost, on idemd and on the
// database alike.
// coalesce=N allows N batches per kind at once; coalesce=0 sends each call
// on its own.
//
// The schema is embedded and versioned (see Migrate); CockroachDB gets
// row-level TTL and an opt-in multi-region layout, PostgreSQL an in-process
// sweeper that deletes expired rows in bounded batches.
//
// # Connection pool
//
// A URL without pool_max_conns gets a pool of at most 32 connections, not
// pgx's max(4, NumCPU): with four, 50 concurrent callers queue for a
// connection and Reserve runs at a fraction of what the database can do.
// 32 keeps three idemd replicas (96 connections) under PostgreSQL's usual
// max_connections of 100; with more replicas, or a smaller database, set
// pool_max_conns so that replicas × pool_max_conns stays below the
// database's limit. An explicit pool_max_conns always wins.
package cockroach
