// Package keyhash is how idem's logs name an idempotency key: idemd and the
// client-side code that runs inside users' services log the same short
// hash under the same attribute, so an operator can match their lines about
// one key without either revealing it (keys often carry order numbers or
// e-mail addresses). It imports nothing but the standard library, so
// client/ can use it without pulling in a store.
package keyhash

import (
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
)

// Attr is the log attribute that holds Of(key).
const Attr = "key_hash"

// Of returns the first 12 hex digits of key's SHA-256: enough to tell keys
// apart in logs, and what `printf %s "$KEY" | sha256sum | cut -c1-12` gives.
func Of(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:6])
}

// Slog is the key as a log attribute.
func Slog(key string) slog.Attr { return slog.String(Attr, Of(key)) }
