package pebble

import (
	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/internal/recordcodec"
)

// Values hold the record with its ID, so a value decodes without its key
// (the sweep and List read values alone).
func encodeRecord(r *storage.Record) []byte { return recordcodec.Append(nil, r, true) }

func decodeRecord(b []byte) (*storage.Record, error) { return recordcodec.Decode(b, nil) }
