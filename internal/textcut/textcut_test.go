package textcut

import (
	"testing"
	"unicode/utf8"
)

func TestPrefix(t *testing.T) {
	for _, tt := range []struct {
		s    string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exact", 5, "exact"},
		{"abcdef", 3, "abc"},
		{"aé", 2, "a"},  // é is 2 bytes: not cut in half
		{"a😀b", 4, "a"}, // 4-byte rune
		{"a😀b", 5, "a😀"},
		{"😀", 0, ""},
	} {
		got := Prefix(tt.s, tt.n)
		if got != tt.want || !utf8.ValidString(got) {
			t.Errorf("Prefix(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
		}
	}
}

func TestBounded(t *testing.T) {
	if got := Bounded("abc", 3); got != "abc" {
		t.Errorf("Bounded(fits) = %q", got)
	}
	if got, want := Bounded("aébc", 2), "a…(5 bytes)"; got != want {
		t.Errorf("Bounded = %q, want %q", got, want)
	}
}
