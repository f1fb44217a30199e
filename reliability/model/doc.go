// Package model is the sequential specification of idem's per-key state
// machine for the Porcupine linearizability checker
// (github.com/anishathalye/porcupine), so that histories recorded against a
// real idemd can be checked for linearizability.
//
// The model is deterministic because the histories it checks use leases and
// retentions far longer than a run: no lease expires and no record expires,
// so a takeover happens only after Release. A call that failed with an
// unknown outcome (UNAVAILABLE, DEADLINE_EXCEEDED, a killed server) is
// recorded with Output Unknown and Return = math.MaxInt64: Porcupine may then
// place its effect anywhere after its call, or after every other operation,
// which is the same as never.
//
// Histories are partitioned by key; keys never interact.
package model
