package pebble

import (
	"encoding/binary"
	"time"

	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/internal/recordcodec"
)

// Key layout. One byte of prefix separates the keyspaces:
//
//	m <name>                          store metadata
//	r <esc tenant> <esc ns> <esc key> a record
//	x <be64 expires_at> <record key>  expiry index entry, empty value
//
// esc escapes 0x00 as 0x00 0xFF and ends the string with 0x00 0x01. The
// encoding is prefix-free and keeps byte order, so a namespace is one
// contiguous range, keys inside it sort as the strings do, and no choice of
// tenant, namespace or key bytes can make two IDs meet.
const (
	prefixMeta   = 'm'
	prefixRecord = 'r'
	prefixExpiry = 'x'
)

var metaFormatKey = []byte{prefixMeta, 'f', 'o', 'r', 'm', 'a', 't'}

// metaFormatValue marks a Pebble store as idem's, version 1 of the layout.
var metaFormatValue = []byte("idem/1")

func appendEscaped(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == 0 {
			dst = append(dst, 0, 0xFF)
			continue
		}
		dst = append(dst, c)
	}
	return dst
}

func appendString(dst []byte, s string) []byte {
	return append(appendEscaped(dst, s), 0, 1)
}

func recordKey(id storage.ID) []byte {
	k := make([]byte, 0, 1+len(id.Tenant)+len(id.Namespace)+len(id.Key)+6)
	k = append(k, prefixRecord)
	k = appendString(k, id.Tenant)
	k = appendString(k, id.Namespace)
	return appendString(k, id.Key)
}

// parseRecordKey is recordKey's inverse, for naming a record whose value
// cannot be decoded.
func parseRecordKey(k []byte) (storage.ID, bool) {
	if len(k) == 0 || k[0] != prefixRecord {
		return storage.ID{}, false
	}
	k = k[1:]
	var parts [3]string
	for i := range parts {
		var s []byte
		for {
			if len(k) < 2 && (len(k) == 0 || k[0] == 0) {
				return storage.ID{}, false
			}
			if k[0] != 0 {
				s, k = append(s, k[0]), k[1:]
				continue
			}
			if k[1] == 0xFF {
				s, k = append(s, 0), k[2:]
				continue
			}
			if k[1] != 1 {
				return storage.ID{}, false
			}
			k = k[2:]
			break
		}
		parts[i] = string(s)
	}
	if len(k) != 0 {
		return storage.ID{}, false
	}
	return storage.ID{Tenant: parts[0], Namespace: parts[1], Key: parts[2]}, true
}

// namespacePrefix is the common prefix of every record key of a namespace.
func namespacePrefix(tenant, namespace string) []byte {
	k := []byte{prefixRecord}
	k = appendString(k, tenant)
	return appendString(k, namespace)
}

func tenantPrefix(tenant string) []byte {
	return appendString([]byte{prefixRecord}, tenant)
}

// expiryKey orders by expires_at; flipping the sign bit makes the int64
// nanoseconds sort as unsigned big-endian bytes.
func expiryKey(at time.Time, recKey []byte) []byte {
	return appendExpiryKey(make([]byte, 0, 9+len(recKey)), at, recKey)
}

// appendExpiryKey appends the expiry key to dst, so a caller can build it
// in a buffer of its own.
func appendExpiryKey(dst []byte, at time.Time, recKey []byte) []byte {
	dst = append(dst, prefixExpiry)
	dst = binary.BigEndian.AppendUint64(dst, uint64(recordcodec.UnixNano(at))^(1<<63))
	return append(dst, recKey...)
}

// expiryBound is the first expiry key after every entry expiring at or
// before t.
func expiryBound(t time.Time) []byte {
	k := make([]byte, 9)
	k[0] = prefixExpiry
	binary.BigEndian.PutUint64(k[1:], uint64(t.UnixNano()+1)^(1<<63))
	return k
}

// successor is the smallest key greater than every key with prefix p.
func successor(p []byte) []byte {
	s := append([]byte(nil), p...)
	for len(s) > 0 && s[len(s)-1] == 0xFF {
		s = s[:len(s)-1]
	}
	if len(s) == 0 {
		return nil
	}
	s[len(s)-1]++
	return s
}
