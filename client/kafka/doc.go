// Package kafka consumes Kafka topics effectively once with franz-go
// (github.com/twmb/franz-go/pkg/kgo), with idem (package client/consumer) as
// the dedupe ledger.
//
// Each poll is reserved with one BatchReserve; only records not seen before
// reach the handler, each with the fencing token in its context
// (client.TokenFromContext); outcomes are recorded with one BatchComplete,
// and only then are the offsets committed. Records redelivered after a crash
// or a rebalance (their offsets were not committed yet) and records replayed
// from an earlier offset or by another group sharing the namespace are
// acknowledged without running the handler.
//
// Kafka has no per-record nak: a record whose handler failed transiently, or
// that another group member still holds after a rebalance (whatever the
// consumer's InFlightPolicy), is retried in place after a delay, and the poll loop does not move on (nor commit) until
// every record of the poll is done. Order per partition is kept: the later
// records of its partition are not run before it, but wait with it. A record whose id was reused for another
// payload (a fingerprint mismatch) is reported and skipped. A record whose
// id cannot be derived, or that idem refuses (consumer.Invalid), stops Run
// with its position: retrying it would stall the partition for good, and
// skipping it would lose it. Fetch errors franz-go recovers from by itself
// (a lost group session, a data loss it reset past) are consumed past and
// reported through WithFetchErrorObserver; other fetch errors stop Run.
//
// The message id is "<topic>/<partition>/<offset>" by default, stable
// across redeliveries and replays of one topic; WithHeaderID uses a
// producer-assigned header instead, which also dedupes producer retries
// that wrote the same event twice.
//
// The client must be created with kgo.DisableAutoCommit(): auto-commit could
// commit records that were polled but not yet handled, and a crash would
// then lose them. kgo.BlockRebalanceOnPoll() is recommended; Run allows the
// rebalance after each poll's commit.
//
// The tests run against franz-go's in-process broker, kfake, since no Kafka
// server is available where they run; kfake implements the group protocol
// and offset commits used here.
package kafka
