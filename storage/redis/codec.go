package redis

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/internal/recordcodec"
)

// Results and checkpoints are stored as recordcodec's blobs. Metadata is
// written in key order, so two results encode to the same bytes exactly
// when storage.Result.Equal says they are equal; the Lua scripts rely on
// that to compare results by bytes.

var errCorrupt = errors.New("idem: redis: stored record is corrupt")

// encodeResult encodes r; nil encodes like an empty result.
func encodeResult(r *storage.Result) []byte { return recordcodec.AppendResult(nil, r) }

func decodeResult(b []byte) (*storage.Result, error) {
	r, err := recordcodec.DecodeResult(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errCorrupt, err)
	}
	return r, nil
}

func encodeCheckpoint(cp storage.Checkpoint) []byte { return recordcodec.AppendCheckpoint(nil, cp) }

func decodeCheckpoint(b []byte) (*storage.Checkpoint, error) {
	cp, err := recordcodec.DecodeCheckpoint(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errCorrupt, err)
	}
	return cp, nil
}

// recordVersion is the first byte of a record string; the layout is the
// one scripts.go's HDR packs.
const recordVersion = 2

// recordHeader is the fixed part: version, state, token (8), attempts (4),
// then created_at, lease_expires_at, completed_at, expires_at (8 each).
const recordHeader = 1 + 1 + 8 + 4 + 4*8

// decodeRecord decodes a record string written by the scripts.
func decodeRecord(id storage.ID, v string) (*storage.Record, error) {
	if len(v) < recordHeader+8 || v[0] != recordVersion {
		return nil, errCorrupt
	}
	b := []byte(v)
	at := func(off int) time.Time {
		us := binary.BigEndian.Uint64(b[off:])
		if us == 0 {
			return time.Time{}
		}
		return time.UnixMicro(int64(us)).UTC()
	}
	rec := &storage.Record{
		ID:             id,
		State:          storage.State(b[1]),
		Token:          binary.BigEndian.Uint64(b[2:]),
		Attempts:       binary.BigEndian.Uint32(b[10:]),
		CreatedAt:      at(14),
		LeaseExpiresAt: at(22),
		CompletedAt:    at(30),
		ExpiresAt:      at(38),
	}
	if rec.State < storage.StateInProgress || rec.State > storage.StateReleased {
		return nil, errCorrupt
	}
	rest := b[recordHeader:]
	blob := func() ([]byte, bool) {
		if len(rest) < 4 {
			return nil, false
		}
		n := binary.BigEndian.Uint32(rest)
		if uint64(n) > uint64(len(rest)-4) {
			return nil, false
		}
		out := rest[4 : 4+n]
		rest = rest[4+n:]
		return out, true
	}
	fp, ok1 := blob()
	res, ok2 := blob()
	if !ok1 || !ok2 {
		return nil, errCorrupt
	}
	if len(fp) > 0 {
		rec.Fingerprint = fp
	}
	if len(res) > 0 {
		r, err := decodeResult(res)
		if err != nil {
			return nil, err
		}
		rec.Result = r
	}
	if len(rest) > 0 {
		cp, err := decodeCheckpoint(rest)
		if err != nil {
			return nil, err
		}
		rec.Checkpoint = cp
	}
	return rec, nil
}
