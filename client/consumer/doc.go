// Package consumer makes an at-least-once broker consumer effectively-once
// with idem as its dedupe ledger. It is broker-agnostic: the adapters
// (client/natsjs for NATS JetStream, client/kafka for Kafka via franz-go)
// feed it message ids and map its answers to acks and naks.
//
// For each message, Handle reserves the message id in a namespace (one per
// consumer group), runs the handler with the fencing token in its context
// (client.TokenFromContext), and then completes the record, or releases it
// when the handler failed transiently so that the broker's redelivery
// retries it. A message already completed is a duplicate: it is acknowledged
// and skipped, counted, and never reaches the handler. HandleBatch does the
// same for a batch with one BatchReserve and one BatchComplete round trip.
//
// The window that remains: a consumer that dies after its side effect and
// before Complete leaves the record IN_PROGRESS; when the lease ends the
// redelivered message takes over with a larger token and runs the handler
// again. Side effects in a system that accepts only writes carrying the
// largest token seen per message (fencing), or writes made idempotent by
// the message id, close it; when the side effects are all in the consumer's
// own SQL database, package client/inbox closes it without idem.
//
// Handle's error is nil exactly when the message may be acknowledged.
package consumer
