package cockroach

import (
	"errors"
	"fmt"

	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/internal/recordcodec"
)

// Results and checkpoints are stored as BYTEA holding recordcodec's blobs
// (NULL for none), so the schema needs no JSON or array types that differ
// between PostgreSQL and CockroachDB. The encoding is deterministic
// (metadata sorted by key), so two equal results encode to equal bytes.

var errCorrupt = errors.New("idem: stored record is corrupt")

func encodeResult(r *storage.Result) []byte {
	if r == nil {
		return nil
	}
	return recordcodec.AppendResult(nil, r)
}

func decodeResult(b []byte) (*storage.Result, error) {
	if b == nil {
		return nil, nil
	}
	r, err := recordcodec.DecodeResult(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errCorrupt, err)
	}
	return r, nil
}

func encodeCheckpoint(c *storage.Checkpoint) []byte {
	if c == nil {
		return nil
	}
	return recordcodec.AppendCheckpoint(nil, *c)
}

func decodeCheckpoint(b []byte) (*storage.Checkpoint, error) {
	if b == nil {
		return nil, nil
	}
	c, err := recordcodec.DecodeCheckpoint(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errCorrupt, err)
	}
	return c, nil
}
