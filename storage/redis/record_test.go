package redis

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

// TestRecordLayout packs a record with the scripts' own HDR in Redis and
// checks that decodeRecord reads every field back.
func TestRecordLayout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	s := openTest(ctx, t, "")
	res := encodeResult(&storage.Result{Code: 5, Message: "m", Body: []byte("body")})
	cp := encodeCheckpoint(storage.Checkpoint{Phase: "charged", Data: []byte{1, 2}})
	const us = int64(1795000000123456)
	src := `local HDR = '>BBI8I4I8I8I8I8I4c0I4c0'
return struct.pack(HDR, 2, 3, 4503599627370497, 7, ARGV[1], ARGV[1] + 1, ARGV[1] + 2, ARGV[1] + 3, #ARGV[2], ARGV[2], #ARGV[3], ARGV[3]) .. ARGV[4]`
	for _, tc := range []struct {
		name    string
		res, cp []byte
	}{
		{"bare", nil, nil},
		{"result and checkpoint", res, cp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := s.c.Eval(ctx, src, nil, us, "fp", tc.res, tc.cp).Text()
			if err != nil {
				t.Fatalf("EVAL struct.pack: %v", err)
			}
			id := testID("k")
			got, err := decodeRecord(id, v)
			if err != nil {
				t.Fatalf("decodeRecord() error = %v", err)
			}
			at := func(d int64) time.Time { return time.UnixMicro(us + d).UTC() }
			want := &storage.Record{ID: id, Fingerprint: []byte("fp"), State: storage.StateReleased, Token: 4503599627370497, Attempts: 7,
				CreatedAt: at(0), LeaseExpiresAt: at(1), CompletedAt: at(2), ExpiresAt: at(3)}
			if tc.res != nil {
				want.Result, _ = decodeResult(tc.res)
				want.Checkpoint, _ = decodeCheckpoint(tc.cp)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("decodeRecord() = %+v, want %+v", got, want)
			}
		})
	}
}

func TestDecodeRecordCorrupt(t *testing.T) {
	hdr := "\x02" + strings.Repeat("\x00", recordHeader-1)
	for _, v := range []string{
		"",
		hdr, // no blob lengths
		"\x01" + hdr[1:] + "\x00\x00\x00\x00\x00\x00\x00\x00", // old version
		hdr + "\x00\x00\x00\x05fp\x00\x00\x00\x00",            // fingerprint overruns
		hdr + "\x00\x00\x00\x00\x00\x00\x00\x01\x09",          // bad result blob
		hdr + "\x00\x00\x00\x00\x00\x00\x00\x00\x09",          // bad checkpoint blob
	} {
		if _, err := decodeRecord(testID("k"), v); err == nil {
			t.Errorf("decodeRecord(%q) error = nil, want errCorrupt", v)
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add("\x02" + strings.Repeat("\x00", recordHeader+7))
	f.Fuzz(func(t *testing.T, v string) {
		_, _ = decodeRecord(testID("k"), v) // must not panic
	})
}

// A record of another layout version, even one struct.unpack reads, is
// damaged to the scripts as to decodeRecord: acting on fields read with
// the wrong layout could complete or take over the wrong record.
func TestScriptsRefuseOtherVersion(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	s := openTest(ctx, t, "")
	id := testID("v3")
	// Version 3, IN_PROGRESS, token 1, lease and expiry far ahead.
	src := `local HDR = '>BBI8I4I8I8I8I8I4c0I4c0'
local far = 4102444800000000
return redis.call('SET', KEYS[1], struct.pack(HDR, 3, 1, 1, 1, 1, far, 0, far, 2, 'fp', 0, ''), 'PX', 3600000)`
	if err := s.c.Eval(ctx, src, []string{s.nsPrefix(id.Tenant, id.Namespace) + id.Key}).Err(); err != nil {
		t.Fatal(err)
	}
	rs, err := s.BatchReserve(ctx, []storage.ReserveParams{{ID: id, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour}})
	if err != nil || !errors.Is(rs[0].Err, storage.ErrDamaged) {
		t.Errorf("BatchReserve() = %+v, %v; want the item ErrDamaged", rs, err)
	}
	if _, err := s.Complete(ctx, storage.CompleteParams{ID: id, Token: 1, Retention: time.Hour}); !errors.Is(err, storage.ErrDamaged) {
		t.Errorf("Complete() error = %v, want ErrDamaged", err)
	}
	if _, err := s.Release(ctx, id, 1); !errors.Is(err, storage.ErrDamaged) {
		t.Errorf("Release() error = %v, want ErrDamaged", err)
	}
	if _, _, err := s.List(ctx, storage.ListParams{Tenant: id.Tenant, Namespace: id.Namespace, Limit: 10}); !errors.Is(err, storage.ErrDamaged) {
		t.Errorf("List() error = %v, want ErrDamaged", err)
	}
	if rec, err := s.Delete(ctx, id); err != nil || rec != nil {
		t.Errorf("Delete() = %+v, %v; want it removed without a record", rec, err)
	}
}
