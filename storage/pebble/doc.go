// Package pebble is idem's embedded default backend: records live in a
// Pebble (CockroachDB's storage engine) directory on the local disk, opened
// by the URL pebble://PATH.
//
// Every acknowledged write is synced to the WAL before the call returns.
// Writers to different keys commit concurrently, so Pebble's commit
// pipeline folds their fsyncs into one (group commit); writers to one key
// serialise on a striped lock around read-decide-write, which is what makes
// each operation atomic per record. Batch calls lock all their stripes in
// order and commit once.
//
// Keys are an order-preserving, escaped encoding of (tenant, namespace,
// key), so List is a range scan and no two IDs collide. A second index
// ordered by expires_at lets the background sweep find expired records
// without scanning the keyspace; the sweep re-checks each record under its
// stripe lock before deleting, so it never removes one a takeover extended.
//
// Opening refuses a directory that is corrupt, that holds something other
// than a Pebble store, or that another process has open; it never starts
// silently empty over existing data.
package pebble
