// Package recordcodec is the binary layout of a stored record, shared by
// the backends that keep records as bytes: pebble on disk, memory in RAM
// (where bytes instead of pointer-rich structs keep the garbage collector's
// work and the heap small).
package recordcodec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"time"

	"github.com/idemhq/idem/storage"
)

// Record value codec, version 1:
//
//	version u8, flags u8, state u8, token uvarint, attempts uvarint,
//	tenant, namespace, key, fingerprint (uvarint length + bytes),
//	each time present in flags as varint Unix nanoseconds,
//	result if present: code varint, message, body, details count + (type
//	URL, value)…, metadata count + (key, value)… sorted by key,
//	checkpoint if present: phase, data.
//
// With the ID (pebble), a record decodes without its key. Without it
// (flagNoID; memory), the caller holds the ID and passes it to Decode.
// Decode copies everything it returns, checks every length against the
// bytes left and rejects trailing bytes, so damaged values are errors,
// never panics or huge allocations.
const codecVersion = 1

const (
	flagResult = 1 << iota
	flagCheckpoint
	flagCreatedAt
	flagLeaseExpiresAt
	flagCompletedAt
	flagExpiresAt
	flagNoID
	flagsKnown = 1<<iota - 1
)

// FlagResult is the flags bit of a stored result, for tests that forge values.
const FlagResult = flagResult

var errTruncated = errors.New("truncated")

// Append appends r's encoding to dst, with r's ID when withID is set.
func Append(dst []byte, r *storage.Record, withID bool) []byte {
	n := 32 + len(r.Fingerprint) + 4*binary.MaxVarintLen64
	if withID {
		n += len(r.Tenant) + len(r.Namespace) + len(r.Key)
	}
	if r.Result != nil {
		n += r.Result.Size() + 16 + 8*(len(r.Result.Details)+len(r.Result.Metadata))
	}
	if r.Checkpoint != nil {
		n += len(r.Checkpoint.Phase) + len(r.Checkpoint.Data) + 8
	}
	b := slices.Grow(dst, n)
	var flags byte
	if !withID {
		flags |= flagNoID
	}
	if r.Result != nil {
		flags |= flagResult
	}
	if r.Checkpoint != nil {
		flags |= flagCheckpoint
	}
	times := [4]time.Time{r.CreatedAt, r.LeaseExpiresAt, r.CompletedAt, r.ExpiresAt}
	for i, t := range times {
		if !t.IsZero() {
			flags |= flagCreatedAt << i
		}
	}
	b = append(b, codecVersion, flags, byte(r.State))
	b = binary.AppendUvarint(b, r.Token)
	b = binary.AppendUvarint(b, uint64(r.Attempts))
	if withID {
		b = appendBytes(b, r.Tenant)
		b = appendBytes(b, r.Namespace)
		b = appendBytes(b, r.Key)
	}
	b = appendBytes(b, r.Fingerprint)
	for _, t := range times {
		if !t.IsZero() {
			b = binary.AppendVarint(b, UnixNano(t))
		}
	}
	if r.Result != nil {
		b = appendResult(b, r.Result)
	}
	if r.Checkpoint != nil {
		b = appendCheckpoint(b, *r.Checkpoint)
	}
	return b
}

// appendResult appends a result's fields, metadata in key order, so two
// results encode to the same bytes exactly when storage.Result.Equal says
// they are equal (Redis's scripts compare results by their bytes).
func appendResult(b []byte, res *storage.Result) []byte {
	b = binary.AppendVarint(b, int64(res.Code))
	b = appendBytes(b, res.Message)
	b = appendBytes(b, res.Body)
	b = binary.AppendUvarint(b, uint64(len(res.Details)))
	for _, d := range res.Details {
		b = appendBytes(b, d.TypeURL)
		b = appendBytes(b, d.Value)
	}
	keys := make([]string, 0, len(res.Metadata))
	for k := range res.Metadata {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = appendBytes(b, k)
		b = appendBytes(b, res.Metadata[k])
	}
	return b
}

func appendCheckpoint(b []byte, cp storage.Checkpoint) []byte {
	b = appendBytes(b, cp.Phase)
	return appendBytes(b, cp.Data)
}

func (d *decoder) result() *storage.Result {
	res := &storage.Result{}
	code := d.varint()
	if code < math.MinInt32 || code > math.MaxInt32 {
		d.fail(fmt.Errorf("result code %d out of range", code))
	}
	res.Code = int32(code)
	res.Message = d.string()
	res.Body = d.bytes()
	if n := d.count(2); n > 0 {
		res.Details = make([]storage.Detail, n)
		for i := range res.Details {
			res.Details[i] = storage.Detail{TypeURL: d.string(), Value: d.bytes()}
		}
	}
	if n := d.count(2); n > 0 {
		res.Metadata = make(map[string]string, n)
		prev := ""
		for i := range n {
			k := d.string()
			// Append writes keys sorted and once each; anything else would
			// decode to a result whose bytes differ from the stored ones.
			if d.err == nil && i > 0 && k <= prev {
				d.fail(fmt.Errorf("metadata key %q out of order", k))
			}
			prev = k
			res.Metadata[k] = d.string()
		}
	}
	return res
}

func (d *decoder) checkpoint() *storage.Checkpoint {
	return &storage.Checkpoint{Phase: d.string(), Data: d.bytes()}
}

// Results and checkpoints stored on their own (a SQL column, a field of a
// Redis record) are blobs: blobVersion, then the fields as a record holds
// them.
const blobVersion = 1

// AppendResult appends r as a blob; nil encodes like an empty result.
func AppendResult(b []byte, r *storage.Result) []byte {
	if r == nil {
		r = &storage.Result{}
	}
	return appendResult(append(slices.Grow(b, 16+r.Size()), blobVersion), r)
}

// DecodeResult decodes a result blob, copying what it returns.
func DecodeResult(b []byte) (*storage.Result, error) {
	return decodeBlob(b, "result", (*decoder).result)
}

// AppendCheckpoint appends cp as a blob.
func AppendCheckpoint(b []byte, cp storage.Checkpoint) []byte {
	return appendCheckpoint(append(slices.Grow(b, 8+len(cp.Phase)+len(cp.Data)), blobVersion), cp)
}

// DecodeCheckpoint decodes a checkpoint blob, copying what it returns.
func DecodeCheckpoint(b []byte) (*storage.Checkpoint, error) {
	return decodeBlob(b, "checkpoint", (*decoder).checkpoint)
}

func decodeBlob[T any](b []byte, what string, read func(*decoder) *T) (*T, error) {
	d := &decoder{b: b}
	if v := d.byte(); d.err == nil && v != blobVersion {
		return nil, fmt.Errorf("idem: stored %s: unknown encoding version %d", what, v)
	}
	v := read(d)
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Errorf("%d trailing bytes", len(d.b)))
	}
	if d.err != nil {
		return nil, fmt.Errorf("idem: stored %s: %w", what, d.err)
	}
	return v, nil
}

func appendBytes[T string | []byte](b []byte, s T) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail(errTruncated)
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	// An overlong spelling is damage: Append writes the shortest.
	if n <= 0 || n != uvarintLen(v) {
		d.fail(errors.New("bad uvarint"))
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 || n != uvarintLen(zigzag(v)) {
		d.fail(errors.New("bad varint"))
		return 0
	}
	d.b = d.b[n:]
	return v
}

func uvarintLen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

// zigzag is binary.AppendVarint's mapping of v to the uvarint it writes.
func zigzag(v int64) uint64 { return uint64(v<<1) ^ uint64(v>>63) }

// raw returns the next length-prefixed bytes, aliasing the input.
func (d *decoder) raw() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail(errTruncated)
		return nil
	}
	s := d.b[:n]
	d.b = d.b[n:]
	return s
}

func (d *decoder) string() string { return string(d.raw()) }

// id reads tenant, namespace and key, which lie next to each other, with
// one allocation: a copy of the stretch that holds all three, sliced.
func (d *decoder) id() (tenant, namespace, key string) {
	start := d.b
	var ends [3]int
	var lens [3]int
	for i := range ends {
		lens[i] = len(d.raw())
		ends[i] = len(start) - len(d.b)
	}
	if d.err != nil {
		return "", "", ""
	}
	all := string(start[:ends[2]])
	return all[ends[0]-lens[0] : ends[0]], all[ends[1]-lens[1] : ends[1]], all[ends[2]-lens[2] : ends[2]]
}

// bytes returns a copy, nil when empty.
func (d *decoder) bytes() []byte {
	s := d.raw()
	if len(s) == 0 {
		return nil
	}
	return append([]byte(nil), s...)
}

// count reads an element count that can be at most the bytes left divided
// by the smallest element, so a forged count cannot allocate much.
func (d *decoder) count(minElem int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(len(d.b)/minElem) {
		d.fail(fmt.Errorf("count %d exceeds the remaining %d bytes", n, len(d.b)))
		return 0
	}
	return int(n)
}

func (d *decoder) time() time.Time {
	n := d.varint()
	if d.err != nil {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// Decode decodes a record. A value encoded without its ID takes it from id,
// which must then be non-nil; one encoded with it must get a nil id. Decode
// copies everything it returns.
func Decode(b []byte, id *storage.ID) (*storage.Record, error) {
	d := &decoder{b: b}
	if v := d.byte(); d.err == nil && v != codecVersion {
		return nil, fmt.Errorf("idem: stored record: unknown codec version %d", v)
	}
	flags := d.byte()
	if d.err == nil && flags&^flagsKnown != 0 {
		return nil, fmt.Errorf("idem: stored record: unknown flags %#x", flags)
	}
	r := &storage.Record{State: storage.State(d.byte())}
	if d.err == nil && (r.State < storage.StateInProgress || r.State > storage.StateReleased) {
		return nil, fmt.Errorf("idem: stored record: unknown state %d", r.State)
	}
	r.Token = d.uvarint()
	if a := d.uvarint(); a > math.MaxUint32 {
		d.fail(fmt.Errorf("attempts %d out of range", a))
	} else {
		r.Attempts = uint32(a)
	}
	switch noID := flags&flagNoID != 0; {
	case d.err != nil:
	case noID && id != nil:
		r.ID = *id
	case !noID && id == nil:
		r.Tenant, r.Namespace, r.Key = d.id()
	default:
		d.fail(fmt.Errorf("record has its ID: %t, caller has it: %t", !noID, id != nil))
	}
	r.Fingerprint = d.bytes()
	for i, t := range []*time.Time{&r.CreatedAt, &r.LeaseExpiresAt, &r.CompletedAt, &r.ExpiresAt} {
		if flags&(flagCreatedAt<<i) != 0 {
			*t = d.time()
		}
	}
	if flags&flagResult != 0 {
		r.Result = d.result()
	}
	if flags&flagCheckpoint != 0 {
		r.Checkpoint = d.checkpoint()
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Errorf("%d trailing bytes", len(d.b)))
	}
	if d.err != nil {
		return nil, fmt.Errorf("idem: stored record: %w", d.err)
	}
	return r, nil
}

var (
	latest   = time.Unix(0, math.MaxInt64)
	earliest = time.Unix(0, math.MinInt64)
)

// UnixNano is t in Unix nanoseconds, saturated at the int64 range: past
// 2262 t.UnixNano wraps around to a time long gone, and a record kept that
// long would read as expired the moment it was written. The stores keep
// every time through it.
func UnixNano(t time.Time) int64 {
	switch {
	case t.After(latest):
		return math.MaxInt64
	case t.Before(earliest):
		return math.MinInt64
	}
	return t.UnixNano()
}
