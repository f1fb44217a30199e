package storagetest

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/idemhq/idem/storage"
)

// The default limits (server.DefaultLimits) that reach a store: key and namespace
// 256 B, tenant 128 B, result and checkpoint data 1 MiB, phase 256 B.
const (
	limitKeyBytes    = 256
	limitNSBytes     = 256
	limitTenantBytes = 128
	limitResultBytes = 1 << 20
	limitPhaseBytes  = 256
)

// fillRunes is s padded to exactly n bytes with rune r, then ASCII.
func fillRunes(s string, r rune, n int) string {
	w := utf8.RuneLen(r)
	var b strings.Builder
	b.WriteString(s)
	for b.Len()+w <= n {
		b.WriteRune(r)
	}
	for b.Len() < n {
		b.WriteByte('x')
	}
	return b.String()
}

// resultAtLimit is a result of exactly limitResultBytes as idemd counts it
// (message, body, detail type URLs and values, metadata keys and values),
// with multi-byte UTF-8 in every string and every byte value in the body.
func resultAtLimit(tag string) *storage.Result {
	r := &storage.Result{
		Code:    9,
		Message: "ünïcödé ✓ 😀 " + tag,
		Details: []storage.Detail{
			{TypeURL: "type.googleapis.com/google.rpc.ErrorInfo", Value: []byte{0, 0xff, 0x80, 0}},
			{TypeURL: "type.googleapis.com/ü", Value: nil},
		},
		Metadata: map[string]string{"x-ключ": "значение ✓", "x-bin": "AAH/ ✓"},
	}
	r.Body = make([]byte, limitResultBytes-r.Size())
	for i := range r.Body {
		r.Body[i] = byte(i*7 + i>>8)
	}
	if r.Size() != limitResultBytes {
		panic("storagetest: resultAtLimit is not at the limit")
	}
	return r
}

// testLimitRoundTrips: every value at the default limits comes back from
// the store byte for byte, through every operation that returns it.
func testLimitRoundTrips(t *testing.T, h Harness) {
	t.Run("FourByteRuneKeyWithLargestCheckpointAndResult", func(t *testing.T) {
		e := newEnv(t, h)
		e.tenant = fillRunes(e.tenant+"-", '😀', limitTenantBytes)
		e.ns = fillRunes("/limits.v1.Ünïcode/", '✓', limitNSBytes)
		id := e.id(fillRunes("", '𝄞', limitKeyBytes))
		if len(id.Tenant) != limitTenantBytes || len(id.Namespace) != limitNSBytes || len(id.Key) != limitKeyBytes || !utf8.ValidString(id.Key) {
			t.Fatalf("storagetest: ID lengths %d/%d/%d, want %d/%d/%d", len(id.Tenant), len(id.Namespace), len(id.Key), limitTenantBytes, limitNSBytes, limitKeyBytes)
		}
		fp := bytes.Repeat([]byte{0xff, 0x00, 0xc3, 0x28}, 16) // 64 bytes, not UTF-8
		rec := e.mustReserve(storage.ReserveParams{ID: id, Fingerprint: fp, LeaseTTL: ttl, Retention: retention}, storage.OutcomeReserved)
		if rec.ID != id || !bytes.Equal(rec.Fingerprint, fp) {
			t.Fatalf("Reserve() ID %q fp %x, want %q fp %x", rec.ID, rec.Fingerprint, id, fp)
		}
		data := make([]byte, limitResultBytes)
		for i := range data {
			data[i] = byte(255 - i%251)
		}
		cp := storage.Checkpoint{Phase: fillRunes("phase-", 'é', limitPhaseBytes), Data: data}
		got, err := e.s.Checkpoint(e.ctx, id, rec.Token, cp)
		if err != nil {
			t.Fatalf("Checkpoint(%d-byte phase, %d-byte data) error = %v", len(cp.Phase), len(cp.Data), err)
		}
		if !sameCheckpoint(got.Checkpoint, &cp) {
			t.Fatalf("Checkpoint() answered a checkpoint of %d-byte phase, %d-byte data, want it byte for byte", len(got.Checkpoint.Phase), len(got.Checkpoint.Data))
		}
		if got := e.lookup(id); got.ID != id || !sameCheckpoint(got.Checkpoint, &cp) {
			t.Fatalf("Lookup() = ID %q and a checkpoint that differs, want both byte for byte", got.ID)
		}
		res := resultAtLimit("one")
		done := e.complete(id, rec.Token, res, retention)
		if !done.Result.Equal(res) || !sameCheckpoint(done.Checkpoint, &cp) {
			t.Fatal("Complete() record does not hold the result and checkpoint byte for byte")
		}
		again := e.mustReserve(storage.ReserveParams{ID: id, Fingerprint: fp, LeaseTTL: ttl, Retention: retention}, storage.OutcomeCompleted)
		if again.ID != id || !again.Result.Equal(res) {
			t.Fatalf("Reserve() replay of a %d-byte result did not round-trip", res.Size())
		}
		e.wantUnchanged(done)
		recs, _, err := e.s.List(e.ctx, storage.ListParams{Tenant: id.Tenant, Namespace: id.Namespace, KeyPrefix: id.Key[:limitKeyBytes-4], Limit: 10})
		if err != nil || len(recs) != 1 || recs[0].ID != id || !recs[0].Result.Equal(res) {
			t.Fatalf("List(prefix of the key) = %d records, %v; want the one record byte for byte", len(recs), err)
		}
	})

	t.Run("BatchOfLargestResults", func(t *testing.T) {
		e := newEnv(t, h)
		keys := []string{
			fillRunes("", '✓', limitKeyBytes),         // 3-byte runes
			fillRunes("é", '𝄞', limitKeyBytes),        // 2-, then 4-byte runes
			fillRunes("", 'é', limitKeyBytes-1) + "z", // 2-byte runes and ASCII
		}
		items := make([]storage.ReserveParams, len(keys))
		for i, k := range keys {
			if len(k) != limitKeyBytes || !utf8.ValidString(k) {
				t.Fatalf("storagetest: key %d is %d bytes", i, len(k))
			}
			items[i] = rp(e.id(k), "fp", ttl, retention)
		}
		reserved := e.batchReserve(items)
		done := make([]storage.CompleteParams, len(keys))
		for i, r := range reserved {
			if r.Err != nil || r.Outcome != storage.OutcomeReserved || r.Record.ID.Key != keys[i] {
				t.Fatalf("BatchReserve() item %d = %v %v key %q, want RESERVED with its key", i, r.Outcome, r.Err, r.Record.ID.Key)
			}
			done[i] = storage.CompleteParams{ID: e.id(keys[i]), Token: r.Record.Token, Result: resultAtLimit(keys[i][:8]), Retention: retention}
		}
		for i, r := range e.batchComplete(done) {
			if r.Err != nil || r.Record == nil || !r.Record.Result.Equal(done[i].Result) {
				t.Fatalf("BatchComplete() item %d = %v, want its %d-byte result byte for byte", i, r.Err, limitResultBytes)
			}
		}
		for i, r := range e.batchReserve(items) {
			if r.Err != nil || r.Outcome != storage.OutcomeCompleted || r.Record.ID.Key != keys[i] || !r.Record.Result.Equal(done[i].Result) {
				t.Fatalf("BatchReserve() replay item %d = %v %v, want COMPLETED with its result byte for byte", i, r.Outcome, r.Err)
			}
		}
	})
}
