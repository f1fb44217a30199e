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
