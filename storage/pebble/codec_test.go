package pebble

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/internal/recordcodec"
)

// recordsEqual compares records field by field, times by instant and
// byte slices and maps with nil equal to empty, as the codec promises.
func recordsEqual(a, b *storage.Record) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.ID != b.ID || !bytes.Equal(a.Fingerprint, b.Fingerprint) || a.State != b.State ||
		a.Token != b.Token || a.Attempts != b.Attempts ||
		!a.CreatedAt.Equal(b.CreatedAt) || !a.LeaseExpiresAt.Equal(b.LeaseExpiresAt) ||
		!a.CompletedAt.Equal(b.CompletedAt) || !a.ExpiresAt.Equal(b.ExpiresAt) {
		return false
	}
	if (a.Result == nil) != (b.Result == nil) || !a.Result.Equal(b.Result) {
		return false
	}
	if (a.Checkpoint == nil) != (b.Checkpoint == nil) {
		return false
	}
	if a.Checkpoint != nil && (a.Checkpoint.Phase != b.Checkpoint.Phase || !bytes.Equal(a.Checkpoint.Data, b.Checkpoint.Data)) {
		return false
	}
	return true
}

func sampleRecords() []*storage.Record {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	return []*storage.Record{
		{ID: storage.ID{Key: "k"}, State: storage.StateInProgress, Token: 1, Attempts: 1, CreatedAt: t0, LeaseExpiresAt: t0.Add(time.Second), ExpiresAt: t0.Add(time.Hour)},
		{
			ID:          storage.ID{Tenant: "t\x00x", Namespace: "/a.v1.S/M", Key: "ключ"},
			Fingerprint: bytes.Repeat([]byte{0xAB}, 64),
			State:       storage.StateCompleted, Token: 1<<64 - 1, Attempts: 1<<32 - 1,
			Result: &storage.Result{
				Code: -5, Message: "m", Body: []byte{0, 0, 1},
				Details:  []storage.Detail{{TypeURL: "type.googleapis.com/google.rpc.ErrorInfo", Value: []byte{1}}, {}},
				Metadata: map[string]string{"z": "1", "a": "", "": "x"},
			},
			Checkpoint: &storage.Checkpoint{Phase: "p", Data: []byte("d")},
			CreatedAt:  time.Unix(0, -1).UTC(), LeaseExpiresAt: t0, CompletedAt: t0, ExpiresAt: t0.Add(24 * time.Hour),
		},
		{ID: storage.ID{Key: "k"}, State: storage.StateReleased, Result: &storage.Result{}, Checkpoint: &storage.Checkpoint{}},
	}
}

func TestCodecRoundTrip(t *testing.T) {
	for i, r := range sampleRecords() {
		got, err := decodeRecord(encodeRecord(r))
		if err != nil {
			t.Fatalf("record %d: decode(encode()) error = %v", i, err)
		}
		if !recordsEqual(got, r) {
			t.Errorf("record %d: decode(encode()) = %+v, want %+v", i, got, r)
		}
	}
}

// Pebble's Get buffer is only valid until its closer runs, so a decoded
// record must share no memory with the bytes it came from.
func TestDecodeCopies(t *testing.T) {
	for i, r := range sampleRecords() {
		b := encodeRecord(r)
		got, err := decodeRecord(b)
		if err != nil {
			t.Fatalf("record %d: decode error = %v", i, err)
		}
		for j := range b {
			b[j] = 0xEE
		}
		if !recordsEqual(got, r) {
			t.Errorf("record %d after overwriting its encoding = %+v, want %+v", i, got, r)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	good := encodeRecord(sampleRecords()[1])
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"unknown version", append([]byte{2}, good[1:]...)},
		{"unknown flag", append([]byte{1, 0x80}, good[2:]...)},
		{"state 0", append([]byte{1, good[1], 0}, good[3:]...)},
		{"state 4", append([]byte{1, good[1], 4}, good[3:]...)},
		{"trailing byte", append(bytes.Clone(good), 0)},
		{"huge length", append([]byte{1, 0, 1, 1, 1}, binary.AppendUvarint(nil, 1<<62)...)},
		{"huge count", append([]byte{1, recordcodec.FlagResult, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0}, binary.AppendUvarint(nil, 1<<40)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r, err := decodeRecord(tc.b); err == nil {
				t.Errorf("decodeRecord() = %+v, nil; want an error", r)
			}
		})
	}
	for n := range len(good) {
		if _, err := decodeRecord(good[:n]); err == nil {
			t.Errorf("decodeRecord(first %d of %d bytes) error = nil, want an error", n, len(good))
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, r := range sampleRecords() {
		f.Add(encodeRecord(r))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		if err != nil {
			return
		}
		// Whatever decodes must encode and decode to the same record.
		again, err := decodeRecord(encodeRecord(r))
		if err != nil || !recordsEqual(again, r) {
			t.Fatalf("re-decode = %+v, %v; want %+v", again, err, r)
		}
	})
}

func FuzzRoundTrip(f *testing.F) {
	f.Add("t", "ns", "k", []byte("fp"), uint8(1), uint64(1), uint32(1), int64(1), int64(2), int64(0), int64(3), true, int32(0), "msg", []byte("body"), "type", []byte("v"), "mk", "mv", false, "phase", []byte("data"))
	f.Add("", "", "\x00", []byte(nil), uint8(2), uint64(1<<63), uint32(7), int64(-1), int64(0), int64(5), int64(1<<62), false, int32(-1), "", []byte(nil), "", []byte(nil), "", "", true, "", []byte(nil))
	f.Fuzz(func(t *testing.T, tenant, ns, key string, fp []byte, state uint8, token uint64, attempts uint32,
		created, lease, completed, expires int64, hasResult bool, code int32, msg string, body []byte,
		typeURL string, value []byte, mk, mv string, hasCP bool, phase string, data []byte) {
		at := func(n int64) time.Time {
			if n == 0 {
				return time.Time{}
			}
			return time.Unix(0, n).UTC()
		}
		r := &storage.Record{
			ID: storage.ID{Tenant: tenant, Namespace: ns, Key: key}, Fingerprint: fp,
			State: storage.State(state%3 + 1), Token: token, Attempts: attempts,
			CreatedAt: at(created), LeaseExpiresAt: at(lease), CompletedAt: at(completed), ExpiresAt: at(expires),
		}
		if hasResult {
			r.Result = &storage.Result{Code: code, Message: msg, Body: body,
				Details: []storage.Detail{{TypeURL: typeURL, Value: value}}, Metadata: map[string]string{mk: mv}}
		}
		if hasCP {
			r.Checkpoint = &storage.Checkpoint{Phase: phase, Data: data}
		}
		got, err := decodeRecord(encodeRecord(r))
		if err != nil {
			t.Fatalf("decode(encode(%+v)) error = %v", r, err)
		}
		if !recordsEqual(got, r) {
			t.Fatalf("decode(encode()) = %+v, want %+v", got, r)
		}
	})
}
