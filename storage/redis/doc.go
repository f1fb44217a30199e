// Package redis is idem's Redis backend, for short replay windows on
// low-risk APIs. Importing it registers the redis:// and rediss:// (TLS)
// store URLs:
//
//	redis://[:password@]host:6379/0?pool_size=50&wait_replicas=1&wait_timeout=100ms
//
// Query options, besides go-redis's own (pool_size, dial_timeout,
// read_timeout, write_timeout, pool_timeout, min_idle_conns, max_retries,
// client_name, protocol, …):
//   - key_prefix (default "idem"): the first part of every key, so several
//     deployments can share one Redis. No '{' or '}'.
//   - wait_replicas=N: after every write, WAIT for N replicas, sent on the
//     same connection in the same round trip; a write not acknowledged by N
//     replicas within wait_timeout fails with storage.ErrUnavailable. Unset
//     means no WAIT. Since the WAIT leaves before the script's answer is
//     known, every call that may write waits: Reserve (a replay of a
//     completed key too), Complete, Release, ExtendLease, Checkpoint,
//     Delete, ForceRelease and the batches. While fewer than N replicas
//     answer, those all fail after wait_timeout; Lookup, List, Stats and
//     Ping (so idemd's health) still answer.
//   - wait_timeout (default 1s): how long each WAIT may block.
//   - coalesce (default 2): pipelines of concurrent calls in flight at
//     once; 0 sends each call on its own (see Operations).
//
// go-redis's command retries are off unless max_retries is given: a retried
// write whose first reply was lost would answer its own caller's Reserve
// with IN_PROGRESS. Callers retry through the idempotency rules instead.
//
// # Operations
//
// Every operation is one Lua script, loaded once and run by EVALSHA (a
// NOSCRIPT after a restart or SCRIPT FLUSH loads it again and re-sends the
// call, which did not run). A script reads its now from Redis TIME, so idemd
// replicas with skewed clocks agree, and encodes the rules of
// storage/transition.go: takeover, mismatch, idempotent Complete and Release
// (results compared byte for byte, since results are stored as a canonical
// blob), fencing tokens. A record is one string — a short binary header
// (state, token, attempts, times), the fingerprint, the result and the
// checkpoint — written with SET … PXAT at its expires_at, so a write is one
// command with its physical expiry; Go decodes it. A script also treats a
// record whose expires_at has passed as absent, whatever Redis has deleted
// yet. A write is the record alone: Reserve of a new key is TIME, GET and
// SET … PXAT inside one script, the replay of a completed key one GET.
// The Reserve and Complete scripts take many records of one tenant at once
// and run them in order, each atomic on its own: BatchReserve and
// BatchComplete send one script call per tenant and run of up to 256
// items (so a batch of 1,000 holds Redis's single thread for a quarter of
// its length at a time), all in one pipeline, one round trip. Concurrent
// single-record calls are gathered the same way (coalesce=N pipelines in
// flight, default 2; coalesce=0 sends each call alone): Redis reads,
// runs and answers many calls per system call and per script run, and so
// does idemd.
//
// # Keys
//
// All keys of a tenant carry the hash tag {t<hex of tenant>}, so they share
// one Redis Cluster slot and braces in a tenant cannot break the tag; the
// namespace is length-prefixed so no namespace/key pair collides with
// another. There is nothing but records: no index to keep up on the write
// path, and Redis deletes each record at its expires_at.
//
// List and Stats, the operators' calls, find records with SCAN over the
// node that holds the tenant (MATCH on the namespace's, or tenant's, key
// prefix), then read the live ones with a script in chunks of 1,000. Their
// cost is O(keys on that Redis node) whatever the page size: fine for an
// operator's look at a store that keeps minutes of records, not for a
// dashboard polling a large one. Stats counts are not one snapshot.
//
// Upgrading from a version that kept index keys ("i:", "x:", "n"): records
// are unchanged and read as before; the index keys are no longer written
// and expire on their own TTL. Stop the old replicas first: their List
// would miss keys reserved by new ones.
//
// Upgrading from a version that stored a hash per record (key part "r:"):
// those records are not read; their keys count as absent and expire on
// their own. Old and new idemd replicas do not see each other's records,
// so stop every old replica before starting a new one, and expect keys
// reserved or completed just before the upgrade to run again if retried.
//
// The URL opens one Redis server (a primary; replicas only through WAIT).
// The key layout is ready for Redis Cluster, and New accepts a
// go-redis ClusterClient, except with WaitReplicas: WAIT must follow the
// write on the same connection, which a cluster pipeline does not promise.
//
// # Durability — read this before routing a namespace here
//
// A reservation or result is acknowledged once it is in Redis's memory.
// What survives a crash depends entirely on how Redis is configured:
//   - No AOF (appendonly no): a restart loses everything written since the
//     last RDB snapshot; with snapshots off (save "", as on the test
//     machine) it loses every record. Lost records mean a retried command
//     runs its side effect again.
//   - appendonly yes with appendfsync everysec (the usual setting): a crash
//     of the machine or the Redis process loses up to about one second of
//     acknowledged writes.
//   - appendonly yes with appendfsync always: each write is fsync'd before
//     Redis replies, so a single node loses nothing acknowledged, at a large
//     cost in throughput.
//   - wait_replicas=N: the write is in the memory of N replicas before idem
//     answers, so losing the primary's machine does not by itself lose it.
//     WAIT is not consensus: replication stays asynchronous, a failover
//     (Sentinel or Cluster) may promote a replica that had not received an
//     acknowledged write, and a write that timed out waiting may still be
//     applied. A Reserve that fails its WAIT has nonetheless reserved the
//     key; its retry sees IN_PROGRESS until the lease ends. WAIT confirms
//     the replicas received the write, not that they fsync'd it (Redis
//     7.2's WAITAOF would; not used, to keep Redis 7.0 supported).
//
// Eviction loses records too: every idem key has a TTL, so any
// maxmemory-policy but noeviction (volatile-* included) may drop a live
// record under memory pressure. Run with maxmemory-policy noeviction; the
// store logs a warning at open when it can read another policy, and with
// noeviction a full Redis refuses writes (OOM, reported as
// storage.ErrUnavailable) instead of forgetting.
//
// For guarantees that must survive machine loss without these caveats, use
// the CockroachDB/PostgreSQL or Pebble backend for that namespace.
package redis
