package server

import (
	"encoding/base64"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// A page token is opaque but comes back from the caller: one that does not
// decode to a key is refused as INVALID_ARGUMENT, never sent to the store
// (PostgreSQL answers invalid UTF-8 or NUL in a TEXT parameter with an
// error, which became INTERNAL).
func TestListKeysRefusesForgedPageToken(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	forge := func(after string) string {
		return base64.RawURLEncoding.EncodeToString([]byte(pageTokenPrefix + after))
	}
	for name, tok := range map[string]string{
		"invalid UTF-8": forge("\xff\xfe"),
		"NUL":           forge("a\x00b"),
		"over key size": forge(strings.Repeat("k", 257)),
	} {
		_, err := e.admin.ListKeys(ctx, &idemv1.ListKeysRequest{Namespace: testNS, PageToken: tok})
		if status.Code(err) != codes.InvalidArgument || !slices.Contains(badFields(t, err), "page_token") {
			t.Errorf("%s: ListKeys() error = %v, want INVALID_ARGUMENT on page_token", name, err)
		}
	}
	// A token ListKeys made still works.
	if _, err := e.admin.ListKeys(ctx, &idemv1.ListKeysRequest{Namespace: testNS, PageToken: forge(strings.Repeat("k", 256))}); err != nil {
		t.Errorf("ListKeys() with a well-formed token error = %v", err)
	}
}
