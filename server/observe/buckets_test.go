package observe

import (
	"sort"
	"testing"
)

// The latencies idem serves are tens of microseconds (a pebble or memory
// store call) to a few milliseconds (a SQL round trip, an RPC over the
// network). Each histogram must tell such values apart, or quantiles over
// them interpolate inside one bucket and a tenfold regression goes unseen.
func TestBucketsResolveMicrosecondLatencies(t *testing.T) {
	bucket := func(b []float64, v float64) int { return sort.SearchFloat64s(b, v) }
	for _, c := range []struct {
		name   string
		b      []float64
		lo, hi float64 // seconds that must land in different buckets
	}{
		{"store op", storeBuckets, 10e-6, 40e-6},
		{"store op", storeBuckets, 40e-6, 90e-6},
		// A call the default 10 s --store-timeout ended (a little over
		// 10 s), apart from a slow one that finished.
		{"store op", storeBuckets, 6, 10.01},
		{"rpc", RPCBuckets, 60e-6, 150e-6},
		{"rpc", RPCBuckets, 150e-6, 450e-6},
		{"wait", waitBuckets, 200e-6, 0.9e-3},
		{"wait", waitBuckets, 0.9e-3, 4e-3},
	} {
		if bucket(c.b, c.lo) == bucket(c.b, c.hi) {
			t.Errorf("%s buckets %v put %gs and %gs in one bucket", c.name, c.b, c.lo, c.hi)
		}
	}
}
