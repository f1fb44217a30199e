package idem

// ErrorDomain is the google.rpc.ErrorInfo domain of every status idem
// sends; server and client both use this constant so they cannot drift.
const ErrorDomain = "idem.dev"

// ErrorInfo reasons that both sides of the wire need: the server sets
// them, the client maps them back to sentinels.
const (
	// ReasonLeaseLost goes with FAILED_PRECONDITION and ErrLeaseLost.
	ReasonLeaseLost = "LEASE_LOST"
	// ReasonNotInProgress goes with FAILED_PRECONDITION and ErrNotInProgress.
	ReasonNotInProgress = "NOT_IN_PROGRESS"
	// ReasonStoreClosed goes with UNAVAILABLE and ErrClosed.
	ReasonStoreClosed = "STORE_CLOSED"
)

// ResultEntryMinBytes is the least one detail or one metadata entry counts
// toward a result's size limit, on the server and in the client's check
// before a Complete: an empty entry holds no bytes of its own but still
// costs framing and memory in the store and in every replay, and without
// a floor a million empty details pass any limit.
const ResultEntryMinBytes = 8
