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
// another attempt holds is nak'ed with a delay of about the holder's lease,
// whatever the consumer's InFlightPolicy (an ack would ack the holder's
// delivery too). From the fetch that delivers them until they are settled,
// a batch's messages are marked in progress every half AckWait, as idem's heartbeat extends their leases; a batch idem
// does not answer for (an outage) is held so, and tried again, rather than
// nak'ed: each nak would spend one of MaxDeliver. A message whose id was
// reused for another payload (a mismatch), whose id cannot be derived, or
// that idem refuses (consumer.Invalid) is terminated, for the stream's
// dead-letter handling.
//
// The message id is the Nats-Msg-Id header (the publisher's dedupe id), or,
// for messages published without one, "<stream>:<stream sequence>", which
// is stable across redeliveries and replays of one stream. WithMessageID
// chooses another.
//
// The JetStream consumer must acknowledge explicitly
// (jetstream.AckExplicitPolicy): under AckAll the ack of one message also
// acknowledges an earlier one that was nak'ed, and under AckNone nothing is
// redelivered, so Run refuses both.
//
// Give the JetStream consumer an AckWait longer than the idem lease: the
// redelivery of a crashed consumer's batch then finds the lease ended and
// takes over, instead of being found in flight and nak'ed again.
package natsjs
