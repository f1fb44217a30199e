package server

import (
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// A result at --max-result-bytes is stored even above gRPC's 4 MiB default
// message size, and one byte more is refused by validation, naming the
// field, not by gRPC as RESOURCE_EXHAUSTED (a code clients retry).
func TestLargeResultLimitReachesValidation(t *testing.T) {
	const limit = 5 << 20
	e := newEnv(t, WithLimits(Limits{MaxResultBytes: limit}))
	ctx := testContext(t)
	for _, tc := range []struct {
		name string
		body int
		code codes.Code
	}{
		{"at the limit", limit, codes.OK},
		{"one byte over", limit + 1, codes.InvalidArgument},
	} {
		key := "big-" + tc.name
		res, err := e.idem.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: key})
		if err != nil {
			t.Fatalf("%s: Reserve() error = %v", tc.name, err)
		}
		_, err = e.idem.Complete(ctx, &idemv1.CompleteRequest{Namespace: "ns", Key: key, Token: res.GetRecord().GetToken(),
			Result: &idemv1.Result{Body: make([]byte, tc.body)}})
		if status.Code(err) != tc.code {
			t.Fatalf("%s: Complete() code = %v (%v), want %v", tc.name, status.Code(err), err, tc.code)
		}
		if tc.code == codes.InvalidArgument {
			if f := badFields(t, err); !slices.Equal(f, []string{"result"}) {
				t.Errorf("%s: bad fields = %v, want [result]", tc.name, f)
			}
			continue
		}
		got, err := e.idem.Lookup(ctx, &idemv1.LookupRequest{Namespace: "ns", Key: key})
		if err != nil {
			t.Fatalf("%s: Lookup() error = %v", tc.name, err)
		}
		if n := len(got.GetRecord().GetResult().GetBody()); n != tc.body {
			t.Errorf("%s: stored body = %d bytes, want %d", tc.name, n, tc.body)
		}
	}
}
