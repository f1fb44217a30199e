package pebble

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	pebbledb "github.com/cockroachdb/pebble/v2"
)

// TestOpenRefusesNewerFormatAsNewer: a store written by a newer idemd (a
// newer Pebble format, or a newer idem key layout) must be refused, and
// the refusal must say so. It said "is corrupt" and "is not an idem
// store": an operator rolling idemd back reads that the data is damaged
// or foreign, and may wipe a store a newer idemd opens fine.
func TestOpenRefusesNewerFormatAsNewer(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string)
	}{
		{"newer pebble format", func(t *testing.T, dir string) {
			populate(t, dir, 10, true)
			ents, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				if n := e.Name(); strings.HasPrefix(n, "marker.format-version.") {
					parts := strings.Split(n, ".")
					parts[len(parts)-1] = "999"
					if err := os.Rename(filepath.Join(dir, n), filepath.Join(dir, strings.Join(parts, "."))); err != nil {
						t.Fatal(err)
					}
				}
			}
		}},
		{"newer idem layout", func(t *testing.T, dir string) {
			populate(t, dir, 10, true)
			db, err := pebbledb.Open(dir, &pebbledb.Options{Logger: quietLogger{}})
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Set(metaFormatKey, []byte("idem/2"), pebbledb.Sync); err != nil {
				t.Fatal(err)
			}
			db.Close()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(t, dir)
			s, err := Open(dir, WithSweepInterval(0), WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
			if err == nil {
				s.Close()
				t.Fatal("Open() error = nil, want a refusal")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "idem: pebble store at "+dir) || !strings.Contains(msg, "newer") ||
				strings.Contains(msg, "corrupt") || strings.Contains(msg, "not an idem store") {
				t.Errorf("Open() error = %q, want \"idem: pebble store at %s …newer…\", neither corrupt nor foreign", msg, dir)
			}
		})
	}
}
