package client

import (
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

func shedding(t *testing.T, d time.Duration) error {
	t.Helper()
	st, err := status.New(codes.ResourceExhausted, "idem: resource exhausted").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

func fixed(f float64) func() float64 { return func() float64 { return f } }

// idemd sheds load with the same RetryInfo delay (1 s) to every caller it
// turns away at once. A pause of exactly that delay brings them all back in
// the same instant, and the spike repeats: the pause must be spread above
// the delay, never below it.
func TestReviewRetryInfoPauseIsJittered(t *testing.T) {
	const ri = time.Second
	err := shedding(t, ri)
	low := backoff(50*time.Millisecond, 2*time.Second, 1, err, fixed(0))
	high := backoff(50*time.Millisecond, 2*time.Second, 1, err, fixed(1))
	if low < ri || high < ri {
		t.Fatalf("backoff() = %v, %v; want at least the RetryInfo delay %v", low, high, ri)
	}
	if low == high {
		t.Errorf("backoff() = %v for every draw of the jitter; want pauses spread above the RetryInfo delay %v", low, ri)
	}
	if high > ri+ri/5 {
		t.Errorf("backoff() = %v; want at most 20%% above the RetryInfo delay %v", high, ri)
	}
}

// The exponential step must saturate at maxDelay however many attempts
// WithRetry allows: base·2^30 overflows for a base over ~8.6 s, and a
// wrapped shift can land anywhere, e.g. on a ~1 s pause when an hour was
// asked for.
func TestReviewBackoffSaturatesAtMaxDelay(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "down")
	for _, tc := range []struct {
		base    time.Duration
		attempt uint
	}{
		{1<<34 + 1, 31},
		{10 * time.Second, 40},
		{50 * time.Millisecond, 200},
		{time.Hour, 2},
	} {
		got := backoff(tc.base, time.Hour, tc.attempt, unavailable, fixed(0.5))
		if got != time.Hour {
			t.Errorf("backoff(base %v, attempt %d, max 1h) = %v, want 1h", tc.base, tc.attempt, got)
		}
	}
	if got := backoff(50*time.Millisecond, time.Hour, 3, unavailable, fixed(0.5)); got != 200*time.Millisecond {
		t.Errorf("backoff(50ms, attempt 3) = %v, want 200ms", got)
	}
}
