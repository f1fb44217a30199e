// Package pebble is idem's embedded default backend: records live in a
// Pebble (CockroachDB's storage engine) directory on the local disk, opened
// by the URL pebble://PATH.
//
// Every acknowledged write is synced to the WAL before the call returns.
// Writers to one key serialise on a striped lock around read-decide-write,
// which is what makes each operation atomic per record. Batch calls lock
// all their stripes in order and commit once. Concurrent Reserves, and
// apart concurrent Completes, are batched the same way (group commit):
// while one batch is being committed and synced, calls queue, and the next
// batch takes them all, so many callers share one commit and one fsync
// instead of each waking for its own. A call that finds nothing in flight
// commits at once, alone. The URL parameter coalesce=N (pebble://PATH?coalesce=N,
// default 1) allows N batches in flight; coalesce=0 commits each call on
// its own, leaving the sharing of fsyncs to Pebble's commit pipeline.
//
// Keys are an order-preserving, escaped encoding of (tenant, namespace,
// key), so List is a range scan and no two IDs collide. A second index
// ordered by expires_at lets the background sweep find expired records
// without scanning the keyspace; the sweep re-checks each record under its
// stripe lock before deleting, so it never removes one a takeover extended.
//
// An in-memory Bloom filter over the record keys (about 2 bytes a key,
// filled by a background scan at Open and rebuilt when it fills) answers
// the read of a key that was never stored, the common case of Reserve,
// without a Pebble Get; it never answers "absent" for a stored key.
//
// Opening refuses a directory that is corrupt, that holds something other
// than a Pebble store, or that another process has open; it never starts
// silently empty over existing data.
package pebble
