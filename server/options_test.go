package server

import (
	"strings"
	"testing"
	"time"
)

// TestLimitsBeyondRecordTimes: a limit that lets an expiry pass 2262 would
// wrap into the past, so a record would read as expired as soon as it was
// written; such limits are refused at start, naming the limit.
func TestLimitsBeyondRecordTimes(t *testing.T) {
	for _, tt := range []struct {
		name string
		set  func(*Limits)
	}{
		{"MaxRetention", func(l *Limits) { l.MaxRetention = 250 * 365 * 24 * time.Hour }},
		{"MaxLease", func(l *Limits) { l.MaxLease = MaxDuration + time.Hour }},
		{"MaxWait", func(l *Limits) { l.MaxWait = MaxDuration + time.Second }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := DefaultLimits()
			tt.set(&l)
			if _, err := l.WithDefaults(); err == nil || !strings.Contains(err.Error(), tt.name) {
				t.Errorf("WithDefaults() error = %v, want one naming %s", err, tt.name)
			}
		})
	}
	l := DefaultLimits()
	l.MaxRetention, l.MaxLease = MaxDuration, MaxDuration
	if _, err := l.WithDefaults(); err != nil {
		t.Errorf("WithDefaults() at MaxDuration error = %v", err)
	}
}

// TestWaitPollingKeepsMaxAtLeastMin: a minimum above the default maximum
// (250ms), given alone, must not leave the backoff capped below it, which
// polled the store faster than the minimum asked for.
func TestWaitPollingKeepsMaxAtLeastMin(t *testing.T) {
	for _, tt := range []struct {
		name             string
		minIv, maxIv     time.Duration
		wantMin, wantMax time.Duration
	}{
		{"min alone", time.Second, 0, time.Second, time.Second},
		{"max below min", time.Second, 500 * time.Millisecond, time.Second, time.Second},
		{"both", time.Second, 4 * time.Second, time.Second, 4 * time.Second},
		{"max alone", 0, time.Second, 10 * time.Millisecond, time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := defaultOptions()
			WithWaitPolling(tt.minIv, tt.maxIv)(&o)
			if o.pollMin != tt.wantMin || o.pollMax != tt.wantMax {
				t.Errorf("WithWaitPolling(%v, %v) = [%v, %v], want [%v, %v]", tt.minIv, tt.maxIv, o.pollMin, o.pollMax, tt.wantMin, tt.wantMax)
			}
		})
	}
}
