package recordcodec

import (
	"reflect"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

// TestRoundTripEveryField: every field of a record comes back, set or
// unset, with and without the ID: a present-but-empty result or checkpoint
// stays present, a zero time stays zero, the Unix epoch stays set.
func TestRoundTripEveryField(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 999_999_999, time.UTC)
	id := storage.ID{Tenant: "t\x00", Namespace: "ns", Key: "k\xff"}
	for name, r := range map[string]*storage.Record{
		"full": {ID: id, Fingerprint: []byte{0, 1}, State: storage.StateCompleted, Token: 1<<64 - 1, Attempts: 1<<32 - 1,
			Result: &storage.Result{Code: -2147483648, Message: "m", Body: []byte{0},
				Details:  []storage.Detail{{TypeURL: "b", Value: []byte{1}}, {TypeURL: "a"}},
				Metadata: map[string]string{"": "", "z": "1", "a": "2"}},
			Checkpoint: &storage.Checkpoint{Phase: "p", Data: []byte{2}},
			CreatedAt:  time.Unix(0, 0).UTC(), LeaseExpiresAt: t0, CompletedAt: time.Unix(-1, 1).UTC(), ExpiresAt: t0.Add(time.Hour)},
		"empty result and checkpoint": {ID: id, State: storage.StateReleased, Result: &storage.Result{}, Checkpoint: &storage.Checkpoint{}},
		"zero times":                  {ID: id, State: storage.StateInProgress, ExpiresAt: t0},
	} {
		for _, withID := range []bool{true, false} {
			var idp *storage.ID
			if !withID {
				idp = &id
			}
			got, err := Decode(Append(nil, r, withID), idp)
			if err != nil {
				t.Fatalf("%s: Decode() error = %v", name, err)
			}
			if !reflect.DeepEqual(got, r) {
				t.Errorf("%s (with ID %t): Decode(Append()) = %+v, want %+v", name, withID, got, r)
			}
		}
	}
}
