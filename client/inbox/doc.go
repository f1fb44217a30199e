// Package inbox is the transactional inbox for consumers whose own database
// is CockroachDB or PostgreSQL: the dedupe marker of a message and the
// business write it causes commit in one database transaction, so a
// redelivered or replayed message changes the database exactly once.
//
// Use the inbox when every side effect of a message is a write to the
// consumer's own SQL database: it closes the crash window between "side
// effect done" and "message marked done" completely, with no extra service.
// Use the idem service (package client/consumer) when the side effects are
// elsewhere (an HTTP call, another team's API, a different store), when
// consumers of many databases share one ledger, or when in-flight duplicates
// must be seen across replicas before the work starts; there the fencing
// token carried to the downstream system is what closes the window.
//
// Process detects the dialect once per db (SELECT version()). CockroachDB
// transactions run under cockroach-go's crdbpgx.ExecuteTx (savepoint-based
// retries); PostgreSQL transactions run in a whole-transaction retry loop (a
// new BEGIN per try) on SQLSTATE 40001 serialization failures, including
// ones reported at COMMIT, and 40P01 deadlocks. crdbpgx.ExecuteTx must not be
// used on PostgreSQL: it relies on CockroachDB's savepoint semantics.
//
// Markers are kept until Cleanup removes them; keep them longer than the
// longest time the broker may redeliver or an operator may replay a message.
package inbox
