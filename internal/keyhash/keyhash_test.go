package keyhash

import "testing"

func TestOf(t *testing.T) {
	// The values of printf %s KEY | sha256sum | cut -c1-12, the recipe
	// docs/operations.md gives operators.
	tests := []struct{ key, want string }{
		{"order-4711", "173d0ddbff03"},
		{"alice@example.com", "ff8d9819fc0e"},
	}
	for _, tt := range tests {
		if got := Of(tt.key); got != tt.want {
			t.Errorf("Of(%q) = %q, want %q", tt.key, got, tt.want)
		}
		if a := Slog(tt.key); a.Key != "key_hash" || a.Value.String() != tt.want {
			t.Errorf("Slog(%q) = %v, want key_hash=%s", tt.key, a, tt.want)
		}
	}
}
