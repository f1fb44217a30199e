package storage

import "testing"

func TestRedacted(t *testing.T) {
	tests := []struct{ in, want string }{
		{"memory://", "memory://"},
		{"pebble://./idem-data", "pebble://./idem-data"},
		{"postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"},
		{"postgres://u:s3cret@db:5432/idem", "postgres://u:xxxxx@db:5432/idem"},
		{"redis://:s3cret@cache:6379/0", "redis://:xxxxx@cache:6379/0"},
		{"postgres://u:s3cret@db/%zz", "(unparsable URL)"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := Redacted(tt.in); got != tt.want {
				t.Errorf("Redacted(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
