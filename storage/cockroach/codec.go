package cockroach

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/idemhq/idem/storage"
)

// Results and checkpoints are stored as BYTEA in a small length-prefixed
// encoding, so the schema needs no JSON or array types that differ between
// PostgreSQL and CockroachDB. The encoding is deterministic (metadata sorted
// by key), so two equal results encode to equal bytes.

const codecVersion = 1

var errCorrupt = errors.New("idem: stored record is corrupt")

func encodeResult(r *storage.Result) []byte {
	if r == nil {
		return nil
	}
	b := make([]byte, 0, 16+r.Size())
	b = append(b, codecVersion)
	b = binary.AppendVarint(b, int64(r.Code))
	b = appendBytes(b, []byte(r.Message))
	b = appendBytes(b, r.Body)
	b = binary.AppendUvarint(b, uint64(len(r.Details)))
	for _, d := range r.Details {
		b = appendBytes(b, []byte(d.TypeURL))
		b = appendBytes(b, d.Value)
	}
	keys := make([]string, 0, len(r.Metadata))
	for k := range r.Metadata {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = appendBytes(b, []byte(k))
		b = appendBytes(b, []byte(r.Metadata[k]))
	}
	return b
}

func decodeResult(b []byte) (*storage.Result, error) {
	if b == nil {
		return nil, nil
	}
	d := decoder{b: b}
	if v := d.byte(); v != codecVersion {
		return nil, fmt.Errorf("%w: result encoding version %d", errCorrupt, v)
	}
	r := &storage.Result{}
	r.Code = int32(d.varint())
	r.Message = string(d.bytes())
	r.Body = d.bytes()
	if n := d.count(); n > 0 {
		r.Details = make([]storage.Detail, n)
		for i := range r.Details {
			r.Details[i] = storage.Detail{TypeURL: string(d.bytes()), Value: d.bytes()}
		}
	}
	if n := d.count(); n > 0 {
		r.Metadata = make(map[string]string, n)
		for range n {
			k := string(d.bytes())
			r.Metadata[k] = string(d.bytes())
		}
	}
	if d.err != nil || len(d.b) != 0 {
		return nil, fmt.Errorf("%w: bad result encoding", errCorrupt)
	}
	return r, nil
}

func encodeCheckpoint(c *storage.Checkpoint) []byte {
	if c == nil {
		return nil
	}
	b := make([]byte, 0, 8+len(c.Phase)+len(c.Data))
	b = append(b, codecVersion)
	b = appendBytes(b, []byte(c.Phase))
	return appendBytes(b, c.Data)
}

func decodeCheckpoint(b []byte) (*storage.Checkpoint, error) {
	if b == nil {
		return nil, nil
	}
	d := decoder{b: b}
	if v := d.byte(); v != codecVersion {
		return nil, fmt.Errorf("%w: checkpoint encoding version %d", errCorrupt, v)
	}
	c := &storage.Checkpoint{Phase: string(d.bytes()), Data: d.bytes()}
	if d.err != nil || len(d.b) != 0 {
		return nil, fmt.Errorf("%w: bad checkpoint encoding", errCorrupt)
	}
	return c, nil
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() { d.err = errCorrupt; d.b = nil }

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads an element count, refusing counts the remaining bytes cannot hold.
func (d *decoder) count() int {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *decoder) bytes() []byte {
	n := d.count()
	if d.err != nil {
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	if n == 0 {
		return nil
	}
	return v
}
