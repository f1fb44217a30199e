package redis

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

// TestScriptsRefuseUnknownState: a record of this layout whose state byte
// is none of IN_PROGRESS, COMPLETED, RELEASED (a damaged value) is damaged
// to the scripts and to decodeRecord, as the other backends' codec says.
// Read as "not COMPLETED, not IN_PROGRESS", Reserve took it over and ran
// the command again.
func TestScriptsRefuseUnknownState(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	s := openTest(ctx, t, "")
	src := `local HDR = '>BBI8I4I8I8I8I8I4c0I4c0'
local far = 4102444800000000
return redis.call('SET', KEYS[1], struct.pack(HDR, 2, ARGV[1], 1, 1, 1, far, 0, far, 2, 'fp', 0, ''), 'PX', 3600000)`
	for _, state := range []int{0, 4, 255} {
		t.Run(fmt.Sprint(state), func(t *testing.T) {
			id := testID(fmt.Sprint("state", state))
			if err := s.c.Eval(ctx, src, []string{s.nsPrefix(id.Tenant, id.Namespace) + id.Key}, state).Err(); err != nil {
				t.Fatal(err)
			}
			out, rec, err := s.Reserve(ctx, storage.ReserveParams{ID: id, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour})
			if !errors.Is(err, storage.ErrDamaged) {
				t.Errorf("Reserve() = %v %+v, %v; want ErrDamaged", out, rec, err)
			}
			if rec, err := s.Lookup(ctx, id); !errors.Is(err, storage.ErrDamaged) {
				t.Errorf("Lookup() = %+v, %v; want ErrDamaged", rec, err)
			}
			if _, err := s.Release(ctx, id, 1); !errors.Is(err, storage.ErrDamaged) {
				t.Errorf("Release() error = %v, want ErrDamaged", err)
			}
			if rec, err := s.Delete(ctx, id); err != nil || rec != nil {
				t.Errorf("Delete() = %+v, %v; want it removed without a record", rec, err)
			}
		})
	}
}

func TestDecodeRecordUnknownState(t *testing.T) {
	for _, state := range []byte{0, 4, 255} {
		v := "\x02" + string(state) + string(make([]byte, recordHeader-2+8))
		if rec, err := decodeRecord(testID("k"), v); err == nil {
			t.Errorf("decodeRecord(state %d) = %+v, want errCorrupt", state, rec)
		}
	}
}
