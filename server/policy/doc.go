// Package policy routes namespaces to stores and limits from a policy
// file, so one idemd serves payments from PostgreSQL with a 7-day window
// and notification sends from Redis with a 10-minute one.
//
// The file is YAML, or TOML when its name ends in .toml (one
// [namespaces."pattern"] table per pattern): a "namespaces" mapping from
// pattern to policy.
//
//	namespaces:
//	  /payments.v1.PaymentsService/Charge:  # exact namespace
//	    max_lease: 2m
//	  /payments.*:                          # namespaces starting with "/payments."
//	    store: postgres://idem@db/idem
//	    default_retention: 7d
//	    max_retention: 7d
//	  default:                              # every other namespace
//	    store: pebble:///var/lib/idem
//
// An exact pattern beats the longest matching prefix, which beats default.
// A policy's keys are store (a store URL; patterns naming the same URL
// share one open store; unset means idemd's --store), default_lease,
// max_lease, default_retention, max_retention (Go durations, plus whole
// days as "7d"), store_results (false keeps only a result's code) and
// max_result_bytes. Unset limits are idemd's global ones, which a policy
// may narrow but never widen: a value above a global maximum is an error.
//
// Load validates the whole file before anything serves from it: unknown
// keys, overlapping patterns, bad durations, a default above its maximum
// and every store (opened and pinged) are reported with the file and line.
//
// Reload builds the new routing completely — opening new stores, reusing
// open stores whose URL is unchanged — and swaps it in atomically; a
// reload that fails leaves the old routing serving. A store the new
// routing no longer names is closed once every call that could be using it
// has finished: the Resolver's interceptors count calls per routing
// generation, since a call resolves its store once and may keep using it
// for as long as its wait lasts, which no fixed grace period bounds. Only
// idem.v1 calls are counted: a health Watch stream lasts as long as its
// connection. Close cancels a running reload and, at its deadline, closes
// every store even under calls still using them.
//
// Importing the package registers the idemd extension that adds --policy
// and reloads the file on SIGHUP.
package policy
