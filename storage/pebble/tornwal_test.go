package pebble

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/idemhq/idem/storage"
)

// copyDir copies the files of src into a new directory.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		in, err := os.Open(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(filepath.Join(dst, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		in.Close()
		if err := out.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// TestTornLogTailOpens kills a writing process, then damages the end of
// its log as a power cut can (cut short, zeroed, garbled) at several
// depths. Open must take every such store, and what it brings back must
// be a prefix of what the writer completed, one call after the other:
// never a hole, never a record that does not decode.
func TestTornLogTailOpens(t *testing.T) {
	ctx := testCtx(t)
	dir, acked := killWriter(t, 300)
	logs := filesMatching(t, dir, ".log")
	if len(logs) == 0 {
		t.Fatal("the writer left no log")
	}
	last := filepath.Base(logs[len(logs)-1])
	st, err := os.Stat(logs[len(logs)-1])
	if err != nil {
		t.Fatal(err)
	}
	for _, depth := range []int64{1, 13, 1000, 10000, st.Size() / 2} {
		for _, how := range []string{"cut", "zeroed", "garbled"} {
			t.Run(fmt.Sprintf("%s-%d", how, depth), func(t *testing.T) {
				d := copyDir(t, dir)
				name := filepath.Join(d, last)
				at := st.Size() - depth
				if how == "cut" {
					if err := os.Truncate(name, at); err != nil {
						t.Fatal(err)
					}
				} else {
					b := make([]byte, min(depth, 64))
					for i := range b {
						if how == "garbled" {
							b[i] = byte(i*37 + 1)
						}
					}
					garbleAt(t, name, at, b)
				}
				s, err := Open(d, WithSweepInterval(0))
				if err != nil {
					t.Fatalf("Open() of a store with a torn log tail error = %v", err)
				}
				defer s.Close()
				present := 0
				for i, key := range acked {
					rec, err := s.Lookup(ctx, storage.ID{Tenant: "t", Namespace: "ns", Key: key})
					switch {
					case err == nil && rec.State == storage.StateCompleted:
						if present != i {
							t.Fatalf("key %d is back but key %d is not: a hole in the log's replay", i, present)
						}
						present++
					case err != nil && !strings.Contains(err.Error(), "not found"):
						t.Fatalf("Lookup(%s) error = %v", key, err)
					}
				}
				if _, _, err := s.List(ctx, storage.ListParams{Tenant: "t", Namespace: "ns", Limit: 1000}); err != nil {
					t.Errorf("List() error = %v, want every record back to decode", err)
				}
			})
		}
	}
}

func garbleAt(t *testing.T, name string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
