// Package client is the Go side of idem: a client for idemd, and the gRPC
// interceptors that let any Go gRPC service delegate deduplication to idem
// in a few lines. It imports no storage backend and no database driver.
//
// # Client
//
// New connects to an idemd:
//
//	c, err := client.New("dns:///idem.internal:50051",
//		client.WithTLSConfig(tlsCfg),           // default: TLS with system roots; WithInsecure for plaintext
//		client.WithBearerToken(token),          // per-RPC "authorization: Bearer …"
//		client.WithTenant("acme"),              // fills requests whose tenant is empty
//		client.WithCache(10_000),               // optional LRU of COMPLETED records
//	)
//
// It has one typed method per RPC (Reserve, Complete, Release, ExtendLease,
// Checkpoint, Lookup, BatchReserve, BatchComplete), taking the idemv1
// request types. Calls failing with UNAVAILABLE, or with RESOURCE_EXHAUSTED
// carrying RetryInfo (idemd shedding load; gRPC's refusal of a message over
// its size limit would only fail again), are retried with exponential
// backoff and ±20% jitter, waiting at least the server's
// google.rpc.RetryInfo delay (and up to 20% more, so that callers shed
// together come back spread out), and not at all when the pause would outlast
// the call's deadline (WithRetry). Every idem call is idempotent by
// design, so retrying is safe; a Reserve (or a BatchReserve item) whose
// first answer was lost in transit sees its own reservation as IN_PROGRESS
// until the lease ends. A
// circuit breaker (sony/gobreaker) opens after repeated UNAVAILABLE or
// idem-side timeouts, so a down idem fails fast with ErrUnavailable instead
// of stalling every caller (WithBreaker, WithoutBreaker). With WithCache,
// COMPLETED records seen in Reserve, BatchReserve, Complete or
// BatchComplete answers are kept in a bounded LRU and a Reserve with the
// same tenant, namespace, key and fingerprint is answered from it until the
// record's expires_at: completed records are immutable until they expire.
// An answer showing the record gone or replaced (a Reserve or BatchReserve
// item not COMPLETED with that record, a Lookup of another record or
// NOT_FOUND) drops it.
//
// Package client/idemtest runs a real in-process idem for the tests of
// services that use this package.
//
// Local wraps an in-process idem (such as server.Service over an embedded
// store) in the same Service interface, for a single service that uses idem
// as a library. It answers as *Client does, errors included, but has no
// retries, circuit breaker or cache, and no message-size limit.
//
// # Error contract
//
// Expected outcomes (RESERVED, COMPLETED, IN_PROGRESS, MISMATCH) are values
// in the response, not errors. Errors are:
//
//   - ctx.Err() itself when the caller's own context was cancelled or its
//     deadline passed, so errors.Is(err, context.DeadlineExceeded) works;
//   - otherwise an *Error carrying the gRPC code, the status message (kept in
//     the error text), the ErrorInfo reason and the RetryInfo delay, and
//     wrapping the sentinel of package idem the server mapped from, also
//     exported here: ErrNotFound (NOT_FOUND), ErrLeaseLost
//     (FAILED_PRECONDITION, reason LEASE_LOST), ErrNotInProgress
//     (FAILED_PRECONDITION, reason NOT_IN_PROGRESS: an admin ForceRelease
//     of a completed record), ErrInvalidArgument, ErrUnavailable
//     (UNAVAILABLE, an idem-side DEADLINE_EXCEEDED, or the open circuit
//     breaker), ErrClosed (UNAVAILABLE, reason STORE_CLOSED: idemd's
//     store was closed), ErrResourceExhausted, ErrPermissionDenied,
//     ErrUnauthenticated, ErrDamaged (DATA_LOSS, reason DAMAGED: the store
//     holds a record for the key that idemd cannot decode; an admin
//     DeleteKey removes it). errors.Is(err, client.ErrLeaseLost) holds, and
//     status.FromError(err) still returns the original status.
//
// # Client interceptors
//
// UnaryClientInterceptor and StreamClientInterceptor attach the
// idempotency-key metadata: the key from WithKey(ctx, key), or a UUIDv7
// generated once per logical call. Chain them outside (before) the retry
// interceptor so every retry carries the same key:
//
//	grpc.WithChainUnaryInterceptor(
//		client.UnaryClientInterceptor(),                 // key chosen once
//		retry.UnaryClientInterceptor(retry.WithMax(5),   // each attempt reuses it
//			retry.WithCodes(codes.Unavailable, codes.Aborted)), // ABORTED: the first attempt still runs
//	)
//
// # Server interceptors
//
// UnaryServerInterceptor(svc) and StreamServerInterceptor(svc) deduplicate
// calls through any Service (*Client or Local). Per call: the key comes from
// the idempotency-key metadata, the namespace is the full method (the tenant
// is the Service's, or WithTenantName), the
// fingerprint is SHA-256 over the method and the deterministic protobuf
// encoding of the request (WithFingerprintExclude leaves named fields out;
// fields unknown to this binary are sorted first, since a retry may send
// them in another order),
// and the lease is the time to the call's deadline plus a second, clamped by
// WithLease (when the method's namespace caps leases below that, idem's
// default lease for the namespace, which the heartbeat keeps extending).
// Then, by Reserve outcome:
//
//   - RESERVED: the handler runs with the fencing token in its context
//     (TokenFromContext); a heartbeat extends the lease every half lease
//     (WithoutHeartbeat turns it off; a lost lease cancels the handler's
//     context). Afterwards the result is stored with Complete — the
//     response, or the error's code, message and details — unless its code
//     is transient (DefaultTransientCodes, WithTransientCodes) or it is larger
//     than WithMaxResultSize, in which case the key is Released so a retry
//     runs again. A panicking handler releases the key (see the chain order
//     below). If
//     Complete fails, the caller still gets the handler's answer; the failure
//     is logged and reported as EventCompleteFailed (WithEventHook,
//     WithCounters), and a Complete idem refuses (INVALID_ARGUMENT, e.g. a
//     namespace holding results to less than WithMaxResultSize) releases
//     the key.
//   - COMPLETED: the stored response or error is replayed with header
//     idempotency-replayed: true; the handler does not run. Where idem's
//     policy for the namespace stores outcome codes only (store_results:
//     false), an error replays as its bare code and a success as
//     ALREADY_EXISTS with reason IDEMPOTENCY_RESULT_NOT_STORED
//     (ReasonResultNotStored), unless the response type has no fields.
//   - IN_PROGRESS: Reserve waits up to WithWait for the other attempt, then
//     the call fails ABORTED with RetryInfo.
//   - MISMATCH: FAILED_PRECONDITION, ErrorInfo reason IDEMPOTENCY_KEY_REUSED.
//   - No key: INVALID_ARGUMENT, reason IDEMPOTENCY_KEY_MISSING, unless
//     WithKeyOptional lets the call through.
//   - idem unreachable or shedding load: UNAVAILABLE with RetryInfo (fail
//     closed), or, for methods chosen by WithFailOpen, the handler runs
//     unprotected. Any other refusal (PERMISSION_DENIED, UNAUTHENTICATED…,
//     or INVALID_ARGUMENT for a setting of the interceptor such as a
//     retention above idem's maximum) is logged and fails closed on every
//     method; only a key idem refuses is the caller's INVALID_ARGUMENT.
//
// Methods whose proto declares idempotency_level NO_SIDE_EFFECTS or
// IDEMPOTENT pass through, as do methods WithSelector rejects.
//
// Server-streaming calls are keyed per call; the messages sent are recorded
// (up to WithMaxStreamMessages and WithMaxResultSize, else not cached) and
// replayed in order followed by the stored status. Client- and
// bidi-streaming calls are deduplicated per message with
// WithStreamMessageKey: a message already processed is skipped, and a
// message counts as processed when the handler asks for the next one or
// returns without error. The stream's Context() carries the current
// message's token.
//
// On the server, chain the interceptor inside authentication (the tenant
// may come from the caller's credentials) and, as the house order has it,
// outside recovery: a panic then reaches it as recovery's error (UNKNOWN or
// INTERNAL, both transient) and the key is released. With recovery outside
// instead, the interceptor releases the key in a deferred call and the
// panic goes on to recovery.
//
//	grpc.ChainUnaryInterceptor(auth, client.UnaryServerInterceptor(svc), recovery.UnaryServerInterceptor())
package client
