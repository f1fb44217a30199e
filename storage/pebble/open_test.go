package pebble

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/jonboulle/clockwork"

	"github.com/idemhq/idem/storage"
)

// populate makes a store in dir holding n completed records. With flush
// they are in tables; without, only in the WAL.
func populate(t *testing.T, dir string, n int, flush bool) {
	t.Helper()
	ctx := testCtx(t)
	s := openTest(t, dir, clockwork.NewFakeClockAt(epoch))
	for i := range n {
		id := storage.ID{Tenant: "t", Namespace: "ns", Key: fmt.Sprintf("k%05d", i)}
		if _, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour}); err != nil {
			t.Fatalf("Reserve() error = %v", err)
		}
	}
	if flush {
		if err := s.db.Flush(); err != nil {
			t.Fatalf("Flush() error = %v", err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close() error = %v", err)
	}
}

// populateFlushes writes rounds of n records, flushing after each, so the
// early WALs are gone and only the MANIFEST knows the early tables.
func populateFlushes(t *testing.T, dir string, rounds, n int) int {
	t.Helper()
	ctx := testCtx(t)
	s := openTest(t, dir, clockwork.NewFakeClockAt(epoch))
	for r := range rounds {
		for i := range n {
			id := storage.ID{Tenant: "t", Namespace: "ns", Key: fmt.Sprintf("k%d-%05d", r, i)}
			if _, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour}); err != nil {
				t.Fatalf("Reserve() error = %v", err)
			}
		}
		if err := s.db.Flush(); err != nil {
			t.Fatalf("Flush() error = %v", err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close() error = %v", err)
	}
	return rounds * n
}

// TestTruncatedManifestNeverLosesRecords cuts the MANIFEST at many points:
// Pebble reads a cut as a torn tail, so Open must either refuse the store
// as corrupt or come up with every record, never with fewer.
func TestTruncatedManifestNeverLosesRecords(t *testing.T) {
	src := t.TempDir()
	want := populateFlushes(t, src, 4, 50)
	manifest, err := os.ReadFile(currentManifest(t, src))
	if err != nil {
		t.Fatal(err)
	}
	for _, cut := range []int{0, 1, 7, 16, len(manifest) / 4, len(manifest) / 2, len(manifest) - 9, len(manifest) - 1} {
		t.Run(fmt.Sprintf("cut at %d of %d", cut, len(manifest)), func(t *testing.T) {
			dir := t.TempDir()
			if err := os.CopyFS(dir, os.DirFS(src)); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(currentManifest(t, dir), int64(cut)); err != nil {
				t.Fatal(err)
			}
			s, err := Open(dir, WithSweepInterval(0))
			if err != nil {
				if !strings.Contains(err.Error(), "is corrupt") {
					t.Errorf("Open() error = %v, want it to say the store is corrupt", err)
				}
				return
			}
			defer s.Close()
			if got := countPrefix(t, s, prefixRecord); got != want {
				t.Errorf("Open() succeeded with %d records, want %d or a refusal", got, want)
			}
		})
	}
}

func filesMatching(t *testing.T, dir, suffix string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+suffix))
	if err != nil || len(m) == 0 {
		t.Fatalf("no %s file in %s (%v)", suffix, dir, err)
	}
	return m
}

func currentManifest(t *testing.T, dir string) string {
	t.Helper()
	d, err := pebbledb.Peek(dir, vfs.Default)
	if err != nil || !d.Exists {
		t.Fatalf("Peek(%s) = %v, %v", dir, d, err)
	}
	return d.ManifestFilename
}

func truncateHalf(t *testing.T, path string) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, st.Size()/2); err != nil {
		t.Fatal(err)
	}
}

// garble overwrites n bytes at off (negative: from the end) with junk.
func garble(t *testing.T, path string, off int64, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if off < 0 {
		st, _ := f.Stat()
		off += st.Size()
	}
	junk := []byte(strings.Repeat("\xde\xad\xbe\xef", n/4+1))[:n]
	if _, err := f.WriteAt(junk, off); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		// setup prepares dir and returns the path to open.
		setup func(t *testing.T, dir string) string
		want  string
	}{
		{"a file, not a directory", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "file")
			os.WriteFile(p, []byte("x"), 0o600)
			return p
		}, "is not a directory"},
		{"non-empty directory that is not a store", func(t *testing.T, dir string) string {
			os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("hello"), 0o600)
			return dir
		}, `holds "notes.txt", which is not a pebble store's file`},
		{"pebble store of someone else", func(t *testing.T, dir string) string {
			db, err := pebbledb.Open(dir, &pebbledb.Options{Logger: quietLogger{}})
			if err != nil {
				t.Fatal(err)
			}
			db.Set([]byte("other"), []byte("app"), pebbledb.Sync)
			db.Close()
			return dir
		}, "is not an idem store"},
		{"truncated MANIFEST", func(t *testing.T, dir string) string {
			populateFlushes(t, dir, 5, 100)
			truncateHalf(t, currentManifest(t, dir))
			return dir
		}, "is corrupt"},
		{"all records lost", func(t *testing.T, dir string) string {
			populate(t, dir, 10, true)
			// What a lost MANIFEST history looks like to idem: Pebble opens
			// an empty keyspace in a directory idem initialised.
			db, err := pebbledb.Open(dir, &pebbledb.Options{Logger: quietLogger{}})
			if err != nil {
				t.Fatal(err)
			}
			db.DeleteRange([]byte{0}, []byte{0xff}, pebbledb.Sync)
			db.Close()
			return dir
		}, "records were lost"},
		{"empty MANIFEST", func(t *testing.T, dir string) string {
			populate(t, dir, 200, true)
			os.Truncate(currentManifest(t, dir), 0)
			return dir
		}, "is corrupt"},
		{"garbled MANIFEST", func(t *testing.T, dir string) string {
			populate(t, dir, 200, true)
			garble(t, currentManifest(t, dir), 10, 40)
			return dir
		}, "is corrupt"},
		{"missing MANIFEST", func(t *testing.T, dir string) string {
			populate(t, dir, 200, true)
			os.Remove(currentManifest(t, dir))
			return dir
		}, "is corrupt"},
		{"missing manifest marker", func(t *testing.T, dir string) string {
			populate(t, dir, 200, true)
			for _, m := range filesMatching(t, dir, "") {
				if strings.HasPrefix(filepath.Base(m), "marker.manifest.") {
					os.Remove(m)
				}
			}
			return dir
		}, "is corrupt"},
		{"truncated table", func(t *testing.T, dir string) string {
			populate(t, dir, 2000, true)
			truncateHalf(t, filesMatching(t, dir, ".sst")[0])
			return dir
		}, "is corrupt"},
		{"garbled table footer", func(t *testing.T, dir string) string {
			populate(t, dir, 2000, true)
			garble(t, filesMatching(t, dir, ".sst")[0], -40, 40)
			return dir
		}, "is corrupt"},
		{"missing table", func(t *testing.T, dir string) string {
			populate(t, dir, 2000, true)
			os.Remove(filesMatching(t, dir, ".sst")[0])
			return dir
		}, "is corrupt"},
		{"garbled WAL", func(t *testing.T, dir string) string {
			populate(t, dir, 2000, false)
			wal := filesMatching(t, dir, ".log")
			garble(t, wal[len(wal)-1], 4096, 64)
			return dir
		}, "is corrupt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.setup(t, t.TempDir())
			s, err := Open(path, WithSweepInterval(0), WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
			if err == nil {
				s.Close()
				t.Fatalf("Open() error = nil, want one containing %q", tc.want)
			}
			t.Logf("Open() error = %v", err)
			if !strings.HasPrefix(err.Error(), "idem: pebble store at "+path) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open() error = %q, want \"idem: pebble store at %s …%s…\"", err, path, tc.want)
			}
		})
	}
}

func TestOpenAcceptsCleanStores(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string) string
	}{
		{"missing directory", func(t *testing.T, dir string) string { return filepath.Join(dir, "a", "b") }},
		{"empty directory", func(t *testing.T, dir string) string { return dir }},
		{"volume root with lost+found", func(t *testing.T, dir string) string {
			os.Mkdir(filepath.Join(dir, "lost+found"), 0o700)
			return dir
		}},
		{"store with data in tables", func(t *testing.T, dir string) string { populate(t, dir, 100, true); return dir }},
		{"store with data in the WAL", func(t *testing.T, dir string) string { populate(t, dir, 100, false); return dir }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(tc.setup(t, t.TempDir()), WithSweepInterval(0))
			if err != nil {
				t.Fatalf("Open() error = %v, want nil", err)
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close() error = %v", err)
			}
		})
	}
}

func TestOpenTwiceInProcess(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, clockwork.NewRealClock())
	defer s.Close()
	t.Chdir(dir)
	// Another spelling of the same directory must not slip past the lock.
	_, err := Open(".", WithSweepInterval(0))
	if want := "idem: pebble store at . is already open in this process"; err == nil || err.Error() != want {
		t.Errorf("second Open() error = %v, want %q", err, want)
	}
}

// TestHoldStore is the other process of TestOpenLockedByAnotherProcess.
func TestHoldStore(t *testing.T) {
	dir := os.Getenv("IDEM_PEBBLE_HOLD_DIR")
	if dir == "" {
		t.Skip("helper process for TestOpenLockedByAnotherProcess")
	}
	s, err := Open(dir, WithSweepInterval(0))
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	bufio.NewReader(os.Stdin).ReadString('\n') // until the parent closes stdin
	s.Close()
	os.Exit(0)
}

func TestOpenLockedByAnotherProcess(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHoldStore$")
	cmd.Env = append(os.Environ(), "IDEM_PEBBLE_HOLD_DIR="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("helper process said %q, %v; want ready", line, err)
	}
	_, err = Open(dir, WithSweepInterval(0))
	if want := "idem: pebble store at " + dir + " is in use by another process"; err == nil || err.Error() != want {
		t.Errorf("Open() error = %v, want %q", err, want)
	}
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(f string, a ...any) {
	panic(fmt.Sprintf(f, a...))
}

// TestCrashWriter is the child of TestKilledWriterKeepsAcknowledgedWrites:
// it completes records forever and prints each key once Complete returned.
func TestCrashWriter(t *testing.T) {
	dir := os.Getenv("IDEM_PEBBLE_CRASH_DIR")
	if dir == "" {
		t.Skip("helper process for TestKilledWriterKeepsAcknowledgedWrites")
	}
	s, err := Open(dir, WithSweepInterval(0))
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	ctx := context.Background()
	for i := 0; ; i++ {
		id := storage.ID{Tenant: "t", Namespace: "ns", Key: fmt.Sprintf("k%07d", i)}
		if _, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id, Fingerprint: []byte("fp"), LeaseTTL: time.Hour, Retention: 24 * time.Hour}); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		if _, err := s.Complete(ctx, storage.CompleteParams{ID: id, Token: 1, Result: crashResult(i), Retention: 24 * time.Hour}); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println(id.Key)
	}
}

func crashResult(i int) *storage.Result {
	return &storage.Result{Code: int32(i % 17), Body: []byte(fmt.Sprintf("body-%d", i)), Metadata: map[string]string{"i": fmt.Sprint(i)}}
}

// TestKilledWriterKeepsAcknowledgedWrites kills a writing process with
// SIGKILL and reopens its store: every Complete that returned is there.
func TestKilledWriterKeepsAcknowledgedWrites(t *testing.T) {
	ctx := testCtx(t)
	dir, acked := killWriter(t, 300)
	s, err := Open(dir, WithSweepInterval(0))
	if err != nil {
		t.Fatalf("Open() after kill error = %v", err)
	}
	defer s.Close()
	for i, key := range acked {
		rec, err := s.Lookup(ctx, storage.ID{Tenant: "t", Namespace: "ns", Key: key})
		if err != nil {
			t.Fatalf("Lookup(%s) after kill error = %v, want the completed record", key, err)
		}
		if rec.State != storage.StateCompleted || !rec.Result.Equal(crashResult(i)) {
			t.Errorf("Lookup(%s) = %v %+v, want COMPLETED %+v", key, rec.State, rec.Result, crashResult(i))
		}
	}
}

// TestUnfinishedCreationStartsAfresh: an idemd stopped (kill -9) while
// Pebble created a fresh store leaves its first manifest and no marker. No
// record was ever written there, so the next start creates the store,
// instead of refusing it as corrupt forever. A store that took writes has a
// log, and stays refused without its marker.
func TestUnfinishedCreationStartsAfresh(t *testing.T) {
	src := t.TempDir()
	populate(t, src, 0, false)
	manifest, err := os.ReadFile(filepath.Join(src, "MANIFEST-000001"))
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{len(manifest), 39, 0} {
		dir := t.TempDir()
		for name, b := range map[string][]byte{"LOCK": nil, "MANIFEST-000001": manifest[:min(size, len(manifest))]} {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		s, err := Open(dir, WithSweepInterval(0))
		if err != nil {
			t.Errorf("Open() after a creation stopped with a %d-byte manifest error = %v, want a fresh store", size, err)
			continue
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// With a log beside it, records may have been written: still refused.
	dir := t.TempDir()
	for name, b := range map[string][]byte{"LOCK": nil, "MANIFEST-000001": manifest, "000002.log": []byte("x")} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if s, err := Open(dir, WithSweepInterval(0)); err == nil {
		s.Close()
		t.Error("Open() of a directory with a log but no marker = nil error, want it refused as corrupt")
	}
}

// TestLockErrors: the lock file that cannot be created for lack of
// permission is not "in use by another process", which fcntl's EACCES and
// EAGAIN mean.
func TestLockErrors(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{&os.PathError{Op: "open", Path: "/data/LOCK", Err: syscall.EACCES}, "permission denied creating LOCK"},
		{syscall.EAGAIN, "in use by another process"},
		{syscall.EACCES, "in use by another process"},
	} {
		if got := lockError("/data", tt.err).Error(); !strings.Contains(got, tt.want) {
			t.Errorf("lockError(%v) = %q, want it to say %q", tt.err, got, tt.want)
		}
	}
}

// TestGarbledCurrentStaysRefused: a CURRENT file is what an older store
// points at its manifest with; garbled, it is damage, not an unfinished
// creation, and Open refuses the directory without writing to it.
func TestGarbledCurrentStaysRefused(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "CURRENT"), []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(dir, WithSweepInterval(0)); err == nil {
		s.Close()
		t.Fatal("Open() of a directory with a garbled CURRENT = nil error, want it refused")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "CURRENT")); string(b) != "garbage\n" {
		t.Errorf("CURRENT = %q, want it untouched", b)
	}
}

// killWriter runs TestCrashWriter in a child process on a fresh store,
// kills it with SIGKILL once it has acknowledged n keys, and returns the
// store's directory and those keys, in order.
func killWriter(t *testing.T, n int) (dir string, acked []string) {
	t.Helper()
	dir = t.TempDir()
	cmd := exec.CommandContext(testCtx(t), os.Args[0], "-test.run=^TestCrashWriter$")
	cmd.Env = append(os.Environ(), "IDEM_PEBBLE_CRASH_DIR="+dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(stdout)
	for len(acked) < n {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("writer stopped after %d keys: %v", len(acked), err)
		}
		if strings.HasPrefix(line, "error:") {
			t.Fatalf("writer: %s", line)
		}
		acked = append(acked, strings.TrimSpace(line))
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	return dir, acked
}
