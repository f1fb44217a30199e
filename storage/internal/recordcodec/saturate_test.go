package recordcodec

import (
	"testing"
	"time"
)

// Past 2262 time.UnixNano wraps to a time long gone; the stores keep
// every time through UnixNano, which saturates instead.
func TestUnixNanoSaturates(t *testing.T) {
	for _, tc := range []struct {
		t    time.Time
		want int64
	}{
		{time.Unix(0, 5), 5},
		{time.Unix(0, 1<<63-1), 1<<63 - 1},
		{time.Date(2400, 1, 1, 0, 0, 0, 0, time.UTC), 1<<63 - 1},
		{time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), 1<<63 - 1},
		{time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC), -1 << 63},
		{time.Time{}, -1 << 63},
	} {
		if got := UnixNano(tc.t); got != tc.want {
			t.Errorf("UnixNano(%v) = %d, want %d", tc.t, got, tc.want)
		}
	}
}
