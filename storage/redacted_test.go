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

// A password can also be a query parameter (pgx reads password and
// sslpassword); Redacted hides those too, whatever their case or escaping.
func TestRedactedQueryPassword(t *testing.T) {
	tests := []struct{ in, want string }{
		{"postgres://u@db/idem?password=s3cret&sslmode=disable", "postgres://u@db/idem?password=xxxxx&sslmode=disable"},
		{"postgres://u:s3cret@db/idem?sslpassword=s3cret", "postgres://u:xxxxx@db/idem?sslpassword=xxxxx"},
		{"postgres://db/idem?pass%77ord=s3cret", "postgres://db/idem?password=xxxxx"},
		{"postgres://db/idem?PASSWORD=s3cret", "postgres://db/idem?PASSWORD=xxxxx"},
		{"postgres://db/idem?application_name=password", "postgres://db/idem?application_name=password"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := Redacted(tt.in); got != tt.want {
				t.Errorf("Redacted(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
