package redis

import (
	"bytes"
	"errors"
	"testing"

	"github.com/idemhq/idem/storage"
)

func TestResultCodec(t *testing.T) {
	full := &storage.Result{
		Code:     -7,
		Message:  "m\x00ü",
		Body:     []byte{0, 1, 255},
		Details:  []storage.Detail{{TypeURL: "type.googleapis.com/a", Value: []byte("v")}, {TypeURL: "", Value: nil}},
		Metadata: map[string]string{"b": "2", "a": "1", "": ""},
	}
	tests := []struct {
		name string
		r    *storage.Result
	}{
		{"nil", nil},
		{"empty", &storage.Result{}},
		{"code only", &storage.Result{Code: 5}},
		{"full", full},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeResult(encodeResult(tc.r))
			if err != nil {
				t.Fatalf("decodeResult(encodeResult()) error = %v, want nil", err)
			}
			if !got.Equal(tc.r) {
				t.Fatalf("round trip = %+v, want %+v", got, tc.r)
			}
		})
	}

	// The scripts compare results by bytes, so equal results must encode
	// identically and different ones differently.
	same := []struct {
		name string
		a, b *storage.Result
	}{
		{"nil and empty", nil, &storage.Result{}},
		{"nil and empty slices", &storage.Result{Body: nil, Details: nil, Metadata: nil}, &storage.Result{Body: []byte{}, Details: []storage.Detail{}, Metadata: map[string]string{}}},
		{"map order", full, full.Clone()},
	}
	for _, tc := range same {
		t.Run("same/"+tc.name, func(t *testing.T) {
			for range 20 { // map iteration order varies between runs
				if a, b := encodeResult(tc.a), encodeResult(tc.b); !bytes.Equal(a, b) {
					t.Fatalf("encodeResult() = %x and %x, want equal", a, b)
				}
			}
		})
	}
	differ := []struct {
		name string
		a, b *storage.Result
	}{
		{"code", &storage.Result{Code: 1}, &storage.Result{Code: 2}},
		{"message vs body", &storage.Result{Message: "x"}, &storage.Result{Body: []byte("x")}},
		{"metadata key vs value", &storage.Result{Metadata: map[string]string{"ab": ""}}, &storage.Result{Metadata: map[string]string{"a": "b"}}},
		{"detail split", &storage.Result{Details: []storage.Detail{{TypeURL: "ab"}}}, &storage.Result{Details: []storage.Detail{{TypeURL: "a", Value: []byte("b")}}}},
	}
	for _, tc := range differ {
		t.Run("differ/"+tc.name, func(t *testing.T) {
			if a, b := encodeResult(tc.a), encodeResult(tc.b); bytes.Equal(a, b) {
				t.Fatalf("encodeResult() = %x for both, want different", a)
			}
		})
	}
}

func TestCheckpointCodec(t *testing.T) {
	for _, cp := range []storage.Checkpoint{{}, {Phase: "charged"}, {Phase: "p", Data: []byte{0, 255}}} {
		got, err := decodeCheckpoint(encodeCheckpoint(cp))
		if err != nil || got.Phase != cp.Phase || !bytes.Equal(got.Data, cp.Data) {
			t.Errorf("round trip of %+v = %+v, %v; want it back", cp, got, err)
		}
	}
}

// blobVersion is the first byte of recordcodec's blobs, for forged input.
const blobVersion = 1

func TestDecodeCorrupt(t *testing.T) {
	good := encodeResult(&storage.Result{Message: "hello", Metadata: map[string]string{"a": "b"}})
	for _, b := range [][]byte{nil, {}, {9}, good[:len(good)-1], append(bytes.Clone(good), 0), {blobVersion, 0, 0xff}} {
		if _, err := decodeResult(b); !errors.Is(err, errCorrupt) {
			t.Errorf("decodeResult(%x) error = %v, want errCorrupt", b, err)
		}
	}
	if _, err := decodeCheckpoint([]byte{blobVersion, 5, 'a'}); !errors.Is(err, errCorrupt) {
		t.Errorf("decodeCheckpoint(truncated) error = %v, want errCorrupt", err)
	}
}

func FuzzDecodeResult(f *testing.F) {
	f.Add(encodeResult(&storage.Result{Code: 3, Message: "m", Body: []byte("b"), Metadata: map[string]string{"k": "v"}}))
	f.Add([]byte{blobVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeResult(b)
		if err != nil {
			return
		}
		// Whatever decodes must re-encode to a blob that decodes equal.
		r2, err := decodeResult(encodeResult(r))
		if err != nil || !r2.Equal(r) {
			t.Fatalf("re-encoding %+v gave %+v, %v", r, r2, err)
		}
	})
}
