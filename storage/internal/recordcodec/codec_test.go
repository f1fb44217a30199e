package recordcodec

import (
	"bytes"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

// The layout with the ID is tested, and fuzzed, through the pebble
// backend; this covers the form without it.
func TestWithoutID(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	id := storage.ID{Tenant: "t", Namespace: "ns", Key: "k"}
	r := &storage.Record{
		ID: id, Fingerprint: []byte("fp"), State: storage.StateCompleted, Token: 3, Attempts: 2,
		Result:    &storage.Result{Code: 5, Message: "m", Body: []byte("b"), Metadata: map[string]string{"a": "b"}},
		CreatedAt: t0, LeaseExpiresAt: t0.Add(time.Minute), CompletedAt: t0.Add(time.Second), ExpiresAt: t0.Add(time.Hour),
	}
	b := Append(nil, r, false)
	if with := Append(nil, r, true); len(b) >= len(with) {
		t.Errorf("without the ID %d bytes, with it %d; want fewer", len(b), len(with))
	}
	if bytes.Contains(b, []byte("ns")) {
		t.Errorf("encoding without the ID holds the namespace: %q", b)
	}
	got, err := Decode(b, &id)
	if err != nil {
		t.Fatalf("Decode() error = %v", err)
	}
	if got.ID != id || got.Token != 3 || got.State != storage.StateCompleted || !got.ExpiresAt.Equal(r.ExpiresAt) || !got.Result.Equal(r.Result) {
		t.Errorf("Decode() = %+v, want %+v", got, r)
	}
	if _, err := Decode(b, nil); err == nil {
		t.Error("Decode() of a value without its ID, given none, succeeded")
	}
	if _, err := Decode(Append(nil, r, true), &id); err == nil {
		t.Error("Decode() of a value with its ID, given one too, succeeded")
	}
}

// FuzzDecodeCanonical checks that whatever decodes is exactly what Append
// writes for the decoded record: a damaged value either fails or was a
// valid encoding, never a second spelling of some record (Redis compares
// stored results by their bytes).
func FuzzDecodeCanonical(f *testing.F) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	r := &storage.Record{
		ID: storage.ID{Tenant: "t", Namespace: "ns", Key: "k"}, Fingerprint: []byte("fp"), State: storage.StateCompleted, Token: 300, Attempts: 2,
		Result: &storage.Result{Code: -5, Message: "m", Body: []byte("b"),
			Details:  []storage.Detail{{TypeURL: "u", Value: []byte{1}}},
			Metadata: map[string]string{"a": "1", "b": "2"}},
		Checkpoint: &storage.Checkpoint{Phase: "p", Data: []byte("d")},
		CreatedAt:  t0, LeaseExpiresAt: t0, CompletedAt: t0, ExpiresAt: t0.Add(time.Hour),
	}
	f.Add(Append(nil, r, true))
	f.Add(Append(nil, r, false))
	f.Add(AppendResult(nil, r.Result))
	f.Add(AppendCheckpoint(nil, *r.Checkpoint))
	id := storage.ID{Tenant: "t", Namespace: "ns", Key: "k"}
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := Decode(b, nil); err == nil {
			if got := Append(nil, r, true); !bytes.Equal(got, b) {
				t.Fatalf("Decode(%x) = %+v, which encodes as %x", b, r, got)
			}
		}
		if r, err := Decode(b, &id); err == nil {
			if got := Append(nil, r, false); !bytes.Equal(got, b) {
				t.Fatalf("Decode(%x, id) = %+v, which encodes as %x", b, r, got)
			}
		}
		if res, err := DecodeResult(b); err == nil {
			if got := AppendResult(nil, res); !bytes.Equal(got, b) {
				t.Fatalf("DecodeResult(%x) = %+v, which encodes as %x", b, res, got)
			}
		}
		if cp, err := DecodeCheckpoint(b); err == nil {
			if got := AppendCheckpoint(nil, *cp); !bytes.Equal(got, b) {
				t.Fatalf("DecodeCheckpoint(%x) = %+v, which encodes as %x", b, cp, got)
			}
		}
	})
}

// A second spelling of a valid record is damage: an overlong varint, or
// metadata keys repeated or out of order, decoded to a record whose
// encoding differs from the stored bytes.
func TestDecodeRejectsNonCanonical(t *testing.T) {
	r := &storage.Record{ID: storage.ID{Key: "k"}, State: storage.StateCompleted, Token: 1,
		Result: &storage.Result{Metadata: map[string]string{"a": "1", "b": "2"}}}
	good := Append(nil, r, true)
	if _, err := Decode(good, nil); err != nil {
		t.Fatalf("Decode(good) error = %v", err)
	}
	overlong := append([]byte{good[0], good[1], good[2], 0x81, 0x00}, good[4:]...)
	dup := bytes.Replace(bytes.Clone(good), []byte("\x01b\x012"), []byte("\x01a\x012"), 1)
	swapped := bytes.Replace(bytes.Clone(good), []byte("\x01a\x011\x01b\x012"), []byte("\x01b\x012\x01a\x011"), 1)
	for name, b := range map[string][]byte{"overlong token": overlong, "repeated key": dup, "keys out of order": swapped} {
		if got, err := Decode(b, nil); err == nil {
			t.Errorf("%s: Decode() = %+v, nil; want an error", name, got)
		}
	}
}
