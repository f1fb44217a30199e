// Package memory is idem's in-process storage backend, for tests and
// throwaway development servers: records live in sharded hash tables and
// vanish with the process. Open it with the URL "memory://", optionally
// "memory://?shards=256&sweep_interval=1m" (sweep_interval=0 turns the
// background sweep off), or in Go with New.
//
// Each record lives in one of a fixed number of shards chosen by a hash of
// its ID; an operation locks only its shard and decides with the pure state
// machine functions of package storage, so it follows the same rules as
// every other backend. A shard's table and the bytes of its records hold no
// Go pointers, so the garbage collector does not scan them, and a write
// allocates only when its shard needs a new chunk of bytes (table.go). A background sweep deletes
// expired records one shard at a time; until then they are already absent
// to every operation.
//
// List and Stats scan every shard, which is fine for the data sizes this
// backend is meant for.
package memory
