// Package storage defines the contract between idem's server and its
// backends: the Store interface, the record model and the rules every
// backend implements identically. storage/storagetest checks those rules;
// every backend passes it unchanged.
//
// # State machine
//
// A record is identified by ID (tenant, namespace, key). A record whose
// ExpiresAt is not after the store's now is absent for every operation,
// whether or not it was physically deleted yet. All times come from the
// store's clock.
//
// Reserve, in one atomic step:
//   - absent: create IN_PROGRESS, Token 1, Attempts 1, LeaseExpiresAt =
//     now+LeaseTTL, ExpiresAt = now+max(Retention, LeaseTTL). Outcome RESERVED.
//   - any existing record with a different Fingerprint: MISMATCH, no change.
//   - RELEASED, or IN_PROGRESS whose lease is not after now (takeover):
//     Token+1, Attempts+1, new lease, ExpiresAt = max(ExpiresAt,
//     now+max(Retention, LeaseTTL)), Result cleared, Checkpoint kept. RESERVED.
//   - IN_PROGRESS with a live lease: IN_PROGRESS, no change.
//   - COMPLETED: COMPLETED, no change; the stored Result is returned as stored.
//
// Complete(token, result, retention): IN_PROGRESS with this token (lease
// expired or not) becomes COMPLETED with CompletedAt = now and ExpiresAt =
// now+Retention. The same Complete on a record it already completed (same
// token, equal Result) succeeds again and returns the record unchanged.
// Anything else on an existing record is ErrLeaseLost; absent is ErrNotFound.
//
// Release(token): IN_PROGRESS with this token becomes RELEASED; RELEASED
// with this token succeeds again unchanged; anything else on an existing
// record is ErrLeaseLost; absent is ErrNotFound.
//
// ExtendLease(token, ttl) and Checkpoint(token, …): only IN_PROGRESS with
// this token (lease expired or not, as long as nobody took over).
// ExtendLease sets LeaseExpiresAt = now+ttl and raises ExpiresAt to at least
// the new lease end. Otherwise ErrLeaseLost, or ErrNotFound when absent.
//
// Batch calls apply the same rules per item, in order, and report per-item
// errors in their results; the returned error is for the whole call (the
// store is unreachable, the context ended). The server refuses batches
// naming one key twice; a store given one anyway applies the repeats in
// order, each seeing what the one before it did.
//
// Admin calls: Delete removes a record in any state (ErrNotFound when
// absent) and returns it as it was (nil for a record the store cannot
// decode, which it removes all the same: that frees the key); ForceRelease turns IN_PROGRESS into
// RELEASED whatever the token (RELEASED stays as it is; COMPLETED is
// ErrNotInProgress); List pages through live records of one namespace in key
// order; Stats counts live records by namespace and state.
//
// A record the store holds but cannot decode is a *DamagedError naming its
// ID (errors.Is finds ErrDamaged), never a record, an absence or another
// key's answer: as the error of a call on that key, as that item's error in
// a batch (the other items are applied), and as the error of a List whose
// page reaches it. Stats counts it or fails the same way.
//
// The server validates every argument against its limits before calling a
// Store; backends may assume durations are positive and sizes in range.
package storage
