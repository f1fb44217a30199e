package redis

import (
	"encoding/binary"
	"errors"
	"slices"
	"time"

	"github.com/idemhq/idem/storage"
)

// Results and checkpoints are stored as compact blobs: a version byte, then
// length-prefixed fields. Metadata is written in key order, so two results
// encode to the same bytes exactly when storage.Result.Equal says they are
// equal; the Lua scripts rely on that to compare results by bytes.

const codecVersion = 1

var errCorrupt = errors.New("idem: redis: stored record is corrupt")

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendString(b []byte, v string) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// encodeResult encodes r; nil encodes like an empty result.
func encodeResult(r *storage.Result) []byte {
	if r == nil {
		r = &storage.Result{}
	}
	b := make([]byte, 0, 16+r.Size())
	b = append(b, codecVersion)
	b = binary.AppendVarint(b, int64(r.Code))
	b = appendString(b, r.Message)
	b = appendBytes(b, r.Body)
	b = binary.AppendUvarint(b, uint64(len(r.Details)))
	for _, d := range r.Details {
		b = appendString(b, d.TypeURL)
		b = appendBytes(b, d.Value)
	}
	keys := make([]string, 0, len(r.Metadata))
	for k := range r.Metadata {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = appendString(b, k)
		b = appendString(b, r.Metadata[k])
	}
	return b
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.b = r.b[n:]
	return v
}

// bytes returns a copy, or nil when empty.
func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errCorrupt
		return nil
	}
	var v []byte
	if n > 0 {
		v = slices.Clone(r.b[:n])
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) string() string { return string(r.bytes()) }

// count reads a collection length, bounded by what the remaining bytes
// could hold, so a corrupt blob cannot make us allocate wildly.
func (r *reader) count() int {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.err = errCorrupt
		return 0
	}
	return int(n)
}

func decodeResult(b []byte) (*storage.Result, error) {
	if len(b) == 0 || b[0] != codecVersion {
		return nil, errCorrupt
	}
	r := &reader{b: b[1:]}
	res := &storage.Result{Code: int32(r.varint()), Message: r.string(), Body: r.bytes()}
	if n := r.count(); n > 0 {
		res.Details = make([]storage.Detail, n)
		for i := range res.Details {
			res.Details[i] = storage.Detail{TypeURL: r.string(), Value: r.bytes()}
		}
	}
	if n := r.count(); n > 0 {
		res.Metadata = make(map[string]string, n)
		for range n {
			k := r.string()
			res.Metadata[k] = r.string()
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = errCorrupt
	}
	if r.err != nil {
		return nil, r.err
	}
	return res, nil
}

func encodeCheckpoint(cp storage.Checkpoint) []byte {
	b := make([]byte, 0, 8+len(cp.Phase)+len(cp.Data))
	b = append(b, codecVersion)
	b = appendString(b, cp.Phase)
	return appendBytes(b, cp.Data)
}

func decodeCheckpoint(b []byte) (*storage.Checkpoint, error) {
	if len(b) == 0 || b[0] != codecVersion {
		return nil, errCorrupt
	}
	r := &reader{b: b[1:]}
	cp := &storage.Checkpoint{Phase: r.string(), Data: r.bytes()}
	if r.err == nil && len(r.b) != 0 {
		r.err = errCorrupt
	}
	if r.err != nil {
		return nil, r.err
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
