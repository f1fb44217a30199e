package logthrottle

import (
	"testing"
	"time"
)

func TestThrottle(t *testing.T) {
	now := time.Unix(1000, 0)
	th := New(2, time.Second, func() time.Time { return now })
	step := func(name string, wantOK bool, wantLeft int) {
		t.Helper()
		ok, left := th.Allow(name)
		if ok != wantOK || left != wantLeft {
			t.Fatalf("Allow(%q) = %v, %d; want %v, %d", name, ok, left, wantOK, wantLeft)
		}
	}
	step("a", true, 0)
	step("a", true, 0)
	step("a", false, 0) // over the burst: counted
	step("a", false, 0)
	step("b", true, 0) // kinds are apart
	now = now.Add(999 * time.Millisecond)
	step("a", false, 0) // same window
	now = now.Add(time.Millisecond)
	step("a", true, 3) // a new window says what was left out
	step("a", true, 0)
	step("a", false, 0)
	now = now.Add(time.Hour)
	step("a", true, 1)
}
