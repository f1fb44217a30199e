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
