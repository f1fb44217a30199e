package reliability

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/idemhq/idem/internal/testenv"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/reliability/harness"
	"github.com/idemhq/idem/storage/cockroach"
)

var (
	long   = flag.Bool("reliability.long", false, "run longer histories and more crash cycles")
	outDir = flag.String("reliability.out", filepath.Join(os.TempDir(), "idem-reliability"), "directory for visualizations of non-linearizable histories (kept after the test)")
)

// testTimeout bounds each test in short mode; -reliability.long allows 25 minutes.
const testTimeout = 5 * time.Minute

// idemdBin is cmd/idemd, built by TestMain; it serves every store,
// PostgreSQL included, so pgIdemdBin is the same binary.
var idemdBin, pgIdemdBin string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "idem-reliability-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	bins, err := harness.BuildIdemd(ctx, dir, "./cmd/idemd")
	cancel()
	if err == nil {
		idemdBin, pgIdemdBin = bins[0], bins[0]
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

func testCtx(t testing.TB) context.Context {
	timeout := testTimeout
	if *long {
		timeout = 25 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}

func randomName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// startIdemd runs idemd on store at a fresh loopback address until the test ends.
func startIdemd(t testing.TB, store string, args ...string) *harness.Idemd {
	t.Helper()
	addr, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	bin := idemdBin
	if strings.HasPrefix(store, "postgres") {
		bin = pgIdemdBin
	}
	d := &harness.Idemd{Bin: bin, Addr: addr, Store: store, Args: args, Log: filepath.Join(t.TempDir(), "idemd.log")}
	if err := d.Start(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Stop(10 * time.Second); err != nil {
			t.Errorf("stopping idemd: %v", err)
		}
	})
	return d
}

func pebbleStore(t testing.TB) string { return "pebble://" + filepath.Join(t.TempDir(), "data") }

// postgresStore is a migrated schema of its own on the test PostgreSQL, as
// a store URL whose search_path points at it; the schema is dropped when
// the test ends.
func postgresStore(t testing.TB) string {
	t.Helper()
	base := testenv.PostgresURL(t)
	ctx := testCtx(t)
	name := randomName("idem_rel_")
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connecting to the test database: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatalf("CREATE SCHEMA %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("dropping schema %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+name+" CASCADE"); err != nil {
			t.Errorf("DROP SCHEMA %s: %v", name, err)
		}
	})
	u := withParams(t, base, "search_path", name)
	if err := cockroach.Migrate(ctx, u, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("cockroach.Migrate() error = %v", err)
	}
	return u
}

// withParams returns rawURL with query parameters set.
func withParams(t testing.TB, rawURL string, kv ...string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatalf("url.Parse(%q) error = %v", rawURL, err)
	}
	q := u.Query()
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	// pgx unescapes query values like paths, so a space must be %20, not +.
	u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
	return u.String()
}

// clients are n recording clients of idemd at addr sharing one connection
// per client, closed when the test ends.
func clients(t testing.TB, addr string, n int, rec *harness.Recorder, timeout time.Duration, opts ...grpc.DialOption) []*harness.Client {
	t.Helper()
	out := make([]*harness.Client, n)
	for i := range out {
		conn, err := harness.Dial(addr, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		out[i] = &harness.Client{ID: i, Namespace: "reliability", Timeout: timeout, RPC: idemv1.NewIdempotencyServiceClient(conn), Rec: rec}
	}
	return out
}

// checkHistory fails the test when rec's history is not linearizable or a
// call failed in a way the contract does not allow.
func checkHistory(t testing.TB, rec *harness.Recorder) {
	t.Helper()
	for _, u := range rec.Unexpected() {
		t.Errorf("unexpected error: %s", u)
	}
	ops := rec.Operations()
	total, unknown := rec.Counts()
	start := time.Now()
	res, path, err := harness.Check(ops, time.Minute, *outDir, strings.ReplaceAll(t.Name(), "/", "_")+"-"+randomName(""))
	t.Logf("checked %d calls (%d with unknown outcome; %d unanswered lookups or unsent calls left out) in %v: %s; answers: %v",
		total, unknown, rec.Dropped(), time.Since(start).Round(time.Millisecond), res, rec.Summary())
	switch {
	case err != nil:
		t.Errorf("history is not linearizable, and the visualization failed: %v", err)
	case res == porcupine.Illegal:
		t.Errorf("history is not linearizable; visualization: %s; the shortest key history that is not:\n%s", path, harness.Explain(ops))
	case res == porcupine.Unknown:
		t.Errorf("linearizability check did not finish within a minute (%d calls)", total)
	}
}

func mustParse(t testing.TB, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("url.Parse(%q) error = %v", raw, err)
	}
	return u
}
