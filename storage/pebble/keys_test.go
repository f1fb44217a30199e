package pebble

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

func TestRecordKeyOrderAndIsolation(t *testing.T) {
	ids := []storage.ID{
		{Tenant: "a", Namespace: "b", Key: "c"},
		{Tenant: "a", Namespace: "bc", Key: ""},
		{Tenant: "ab", Namespace: "", Key: "c"},
		{Tenant: "a\x00", Namespace: "b", Key: "c"},
		{Tenant: "a", Namespace: "b\x00c", Key: ""},
		{Tenant: "a", Namespace: "b", Key: "c\x00"},
		{Tenant: "a", Namespace: "b", Key: "c\xff"},
		{Tenant: "a", Namespace: "b", Key: "ca"},
		{Tenant: "a", Namespace: "b", Key: ""},
	}
	seen := map[string]storage.ID{}
	for _, id := range ids {
		k := string(recordKey(id))
		if other, ok := seen[k]; ok {
			t.Errorf("recordKey(%q) = recordKey(%q)", id, other)
		}
		seen[k] = id
	}
	// Within one namespace, encoded keys sort as the keys do.
	keys := []string{"", "\x00", "\x00\x00", "\x01", "a", "a\x00", "a\x00b", "ab", "b", "\xff", "\xff\xff"}
	for i := range keys {
		for j := range keys {
			ki := recordKey(storage.ID{Tenant: "t", Namespace: "n", Key: keys[i]})
			kj := recordKey(storage.ID{Tenant: "t", Namespace: "n", Key: keys[j]})
			if got, want := bytes.Compare(ki, kj), strings.Compare(keys[i], keys[j]); got != want {
				t.Errorf("compare(enc %q, enc %q) = %d, want %d", keys[i], keys[j], got, want)
			}
			// A prefix range holds exactly the keys with that prefix.
			lower := appendEscaped(namespacePrefix("t", "n"), keys[i])
			in := bytes.Compare(kj, lower) >= 0 && bytes.Compare(kj, successor(lower)) < 0
			if want := strings.HasPrefix(keys[j], keys[i]); in != want {
				t.Errorf("key %q in range of prefix %q = %v, want %v", keys[j], keys[i], in, want)
			}
		}
	}
}

func TestExpiryKeyOrder(t *testing.T) {
	times := []time.Time{time.Unix(0, -5), time.Unix(0, 0), time.Unix(1, 0), time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)}
	var ks [][]byte
	for _, at := range times {
		ks = append(ks, expiryKey(at, []byte("r")))
	}
	if !slices.IsSortedFunc(ks, bytes.Compare) {
		t.Errorf("expiry keys are not sorted by time")
	}
	for _, at := range times {
		if bytes.Compare(expiryKey(at, []byte("rzzz")), expiryBound(at)) >= 0 {
			t.Errorf("expiryBound(%v) is not above the entries expiring then", at)
		}
		if bytes.Compare(expiryKey(at.Add(1), nil), expiryBound(at)) < 0 {
			t.Errorf("expiryBound(%v) is above entries expiring later", at)
		}
	}
}

// FuzzParseRecordKey: parseRecordKey inverts recordKey for any bytes, and
// refuses what recordKey cannot make.
func FuzzParseRecordKey(f *testing.F) {
	f.Add("t", "ns", "k")
	f.Add("", "", "")
	f.Add("\x00", "\x00\xff", "\x00\x01")
	f.Add("a\x00\x01b", "\xff", "\x01\x00")
	f.Fuzz(func(t *testing.T, tenant, ns, key string) {
		id := storage.ID{Tenant: tenant, Namespace: ns, Key: key}
		k := recordKey(id)
		if got, ok := parseRecordKey(k); !ok || got != id {
			t.Fatalf("parseRecordKey(recordKey(%q)) = %q, %v", id, got, ok)
		}
		for _, bad := range [][]byte{k[:len(k)-1], append(slices.Clone(k), 'x'), append([]byte{prefixExpiry}, k[1:]...)} {
			if got, ok := parseRecordKey(bad); ok {
				t.Fatalf("parseRecordKey(%q) = %q, want a refusal", bad, got)
			}
		}
	})
}
