package client

import (
	"testing"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/idemhq/idem"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
)

// The interceptor's size check before a Complete counts as idemd does, so
// a result idemd would refuse is released instead of failing its Complete.
func TestResultSizeCountsLikeIdemd(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    *idemv1.Result
		want int
	}{
		{"nil", nil, 0},
		{"body and message", &idemv1.Result{Message: "abc", Body: make([]byte, 100)}, 103},
		{"empty details", &idemv1.Result{Details: []*anypb.Any{{}, {}, {}}}, 3 * idem.ResultEntryMinBytes},
		{"short metadata", &idemv1.Result{Metadata: map[string]string{"a": "b"}}, idem.ResultEntryMinBytes},
		{"long entries", &idemv1.Result{
			Details:  []*anypb.Any{{TypeUrl: "type.googleapis.com/x.Y", Value: []byte{1, 2}}},
			Metadata: map[string]string{"content-type": "application/json"},
		}, 25 + 28},
	} {
		if got := resultSize(tc.r); got != tc.want {
			t.Errorf("%s: resultSize = %d, want %d", tc.name, got, tc.want)
		}
	}
}
