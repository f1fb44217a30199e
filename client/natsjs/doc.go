// Package natsjs consumes a NATS JetStream pull consumer effectively once,
// with idem (package client/consumer) as the dedupe ledger.
//
// Each fetched batch is reserved with one BatchReserve; only messages not
// seen before reach the handler, each with the fencing token in its context
// (client.TokenFromContext); the outcomes are recorded with one
// BatchComplete, and only then are the messages acknowledged. Duplicates
// (redeliveries after a crash or an expired AckWait, replays with a new
// consumer) are acknowledged without running the handler. A handler error
// releases the message and naks it, so JetStream redelivers it; a message
// another attempt holds is nak'ed with a delay of about the holder's lease.
//
// The message id is the Nats-Msg-Id header (the publisher's dedupe id), or,
// for messages published without one, "<stream>:<stream sequence>", which
// is stable across redeliveries and replays of one stream. WithMessageID
// chooses another.
//
// Give the JetStream consumer an AckWait longer than the idem lease (the
// processing budget of one batch): a redelivery while the batch still runs
// is only found in flight and nak'ed again.
package natsjs
