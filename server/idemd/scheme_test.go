package idemd

import "testing"

// TestStoreScheme: the metrics' store label names the kind of store, so a
// URL's alias scheme counts with its kind.
func TestStoreScheme(t *testing.T) {
	for url, want := range map[string]string{
		"pebble://./idem-data":                 "pebble",
		"memory://":                            "memory",
		"postgres://u@h/db":                    "postgres",
		"postgresql://u@h/db":                  "postgres",
		"redis://127.0.0.1:6379":               "redis",
		"rediss://cache.example.internal:6380": "redis",
		"PEBBLE:///var/lib/idem":               "pebble",
		"::":                                   "unknown",
	} {
		if got := StoreScheme(url); got != want {
			t.Errorf("StoreScheme(%q) = %q, want %q", url, got, want)
		}
	}
}
