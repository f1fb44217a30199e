package server

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/storage"
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

// ListKeys of records with large results ends a page where its answer
// would pass what idemd reads in a request, and the pages still list every
// record once, in order.
func TestListKeysPagesByBytes(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	big := bytes.Repeat([]byte{'r'}, 1000<<10)
	var want []string
	for i := range 7 {
		key := fmt.Sprint("big-", i)
		if _, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: testNS, Key: key}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: testNS, Key: key, Token: 1, Result: &idemv1.Result{Body: big}}); err != nil {
			t.Fatal(err)
		}
		want = append(want, key)
	}
	budget := answerBytes(e.svc.Limits())
	var got []string
	var pages int
	for tok := ""; ; pages++ {
		resp, err := e.admin.ListKeys(ctx, &idemv1.ListKeysRequest{Namespace: testNS, PageToken: tok})
		if err != nil {
			t.Fatalf("ListKeys() error = %v", err)
		}
		if n := proto.Size(resp); n > budget {
			t.Errorf("page %d is %d bytes, over the %d-byte bound", pages, n, budget)
		}
		for _, r := range resp.GetRecords() {
			got = append(got, r.GetKey())
			if !bytes.Equal(r.GetResult().GetBody(), big) {
				t.Errorf("%s: result of %d bytes, want the whole one", r.GetKey(), len(r.GetResult().GetBody()))
			}
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("pages listed %q, want %q", got, want)
	}
	if pages < 1 {
		t.Errorf("one page for %d records of 1000 KiB; the bound did not end it", len(want))
	}
}

// A page's next_page_token fits in its bound too: records that fill the
// page to a few bytes, then one more, whose token must not push the
// answer past it.
func TestListKeysPageTokenFitsTheBound(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	budget := answerBytes(e.svc.Limits())
	listSize := func(r *storage.Record) int { return entrySize(recordToProto(r, true)) }
	keys := []string{"k0", "k1", "k2", "k3"}
	used, rec := completeBig(ctx, t, e, keys, listSize)
	n := bodyFor(t, budget-used-2, func(n int) int { return listSize(withBody(rec, "k4", n)) })
	completeKey(ctx, t, e, "k4", make([]byte, n))
	completeKey(ctx, t, e, "k5", []byte("small"))

	var got []string
	for tok, page := "", 0; ; page++ {
		resp, err := e.admin.ListKeys(ctx, &idemv1.ListKeysRequest{Namespace: testNS, PageToken: tok})
		if err != nil {
			t.Fatalf("ListKeys() error = %v", err)
		}
		if size := proto.Size(resp); size > budget {
			t.Errorf("page %d is %d bytes, over the %d-byte bound", page, size, budget)
		}
		for _, r := range resp.GetRecords() {
			got = append(got, r.GetKey())
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
	}
	if want := append(keys, "k4", "k5"); !slices.Equal(got, want) {
		t.Errorf("pages listed %q, want %q", got, want)
	}
}
