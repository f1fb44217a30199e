package server

import (
	"encoding/base64"

	"testing"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// A page token is the position in one listing: handed to a ListKeys of
// another tenant, namespace or key prefix it would silently skip every key
// up to its own, so it is refused instead.
func TestListKeysRefusesPageTokenOfAnotherListing(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	const otherNS = "/payments.v1.Payments/Refund"
	for _, tn := range []string{"t1", "t2"} {
		for _, ns := range []string{testNS, otherNS} {
			for _, k := range []string{"a", "b", "c", "m", "z"} {
				if _, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Tenant: tn, Namespace: ns, Key: k}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	first, err := e.admin.ListKeys(ctx, &idemv1.ListKeysRequest{Tenant: "t1", Namespace: testNS, PageSize: 4})
	if err != nil || first.GetNextPageToken() == "" {
		t.Fatalf("ListKeys(page 1) = %v, %v; want a next page", first, err)
	}
	tok := first.GetNextPageToken()
	for name, req := range map[string]*idemv1.ListKeysRequest{
		"another namespace": {Tenant: "t1", Namespace: otherNS, PageToken: tok},
		"another tenant":    {Tenant: "t2", Namespace: testNS, PageToken: tok},
		"another prefix":    {Tenant: "t1", Namespace: testNS, KeyPrefix: "z", PageToken: tok},
	} {
		t.Run(name, func(t *testing.T) {
			resp, err := e.admin.ListKeys(ctx, req)
			if err == nil {
				t.Fatalf("ListKeys(%s, token of t1/%s) = %d records, want INVALID_ARGUMENT on page_token", name, testNS, len(resp.GetRecords()))
			}
			wantInvalid(t, err, "page_token")
		})
	}
	// The listing it came from goes on.
	next, err := e.admin.ListKeys(ctx, &idemv1.ListKeysRequest{Tenant: "t1", Namespace: testNS, PageSize: 4, PageToken: tok})
	if err != nil || len(next.GetRecords()) != 1 || next.GetRecords()[0].GetKey() != "z" {
		t.Fatalf("ListKeys(page 2) = %v, %v; want the record z", next, err)
	}
}

// encodePageToken is the token of earlier versions, the key alone, which
// ListKeys still accepts.
func encodePageToken(after string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(pageTokenPrefix + after))
}
