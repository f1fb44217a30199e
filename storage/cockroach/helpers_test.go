package cockroach

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/storagetest"
)

const testTimeout = 2 * time.Minute

// quiet keeps connect and migration logs out of test output.
var quiet = slog.New(slog.DiscardHandler)

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// postgresURL is the test server's URL, or skips (fails under CI) without one.
func postgresURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("IDEM_TEST_POSTGRES_URL")
	if u == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("IDEM_TEST_POSTGRES_URL is not set; CI must provide a PostgreSQL server")
		}
		t.Skip("set IDEM_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable) to run the PostgreSQL tests")
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

func randomName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// freshSchema creates a schema of its own for one test on the server base
// names and returns base with search_path pointing at it. The schema is
// dropped when the test ends.
func freshSchema(t testing.TB, base string) string {
	t.Helper()
	ctx := testCtx(t)
	name := randomName("idem_test_")
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		if os.Getenv("CI") == "" && os.Getenv("IDEM_TEST_POSTGRES_URL") == "" {
			t.Skipf("test database unreachable: %v", err)
		}
		t.Fatalf("connecting to the test database %s: %v", storage.Redacted(base), err)
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
	return withParams(t, base, "search_path", name)
}

// migratedURL is a fresh, migrated schema's URL.
func migratedURL(t testing.TB, base string) string {
	t.Helper()
	u := freshSchema(t, base)
	if err := Migrate(testCtx(t), u, quiet); err != nil {
		t.Fatalf("Migrate() error = %v, want nil", err)
	}
	return u
}

func openTest(t testing.TB, rawURL string) *Store {
	t.Helper()
	s, err := Open(testCtx(t), withParams(t, rawURL, ParamSweepInterval, "0"), quiet)
	if err != nil {
		t.Fatalf("Open() error = %v, want nil", err)
	}
	return s
}

// offsetClock is the conformance suite's clock: it moves the offset every
// statement adds to the database's now().
type offsetClock struct{ s *Store }

func (c offsetClock) Advance(d time.Duration) { c.s.offset.Add(d.Microseconds()) }

// harness makes each store in its own schema of the server base names.
type harness struct{ base func(testing.TB) string }

func (h harness) MakeStore(ctx context.Context, t *testing.T) (storage.Store, storagetest.Clock) {
	s := openTest(t, migratedURL(t, h.base(t)))
	return s, offsetClock{s}
}

func (h harness) MakeBenchStore(ctx context.Context, b *testing.B) storage.Store {
	s := openTest(b, migratedURL(b, h.base(b)))
	b.Cleanup(func() { s.Close() })
	return s
}

// Damage stores id's record with a result no codec version reads.
func (h harness) Damage(ctx context.Context, t *testing.T, st storage.Store, id storage.ID) {
	t.Helper()
	if _, err := st.(*Store).pool.Exec(ctx, `INSERT INTO idem_records (tenant, namespace, idem_key, fingerprint, state, token, attempts, result, created_at, lease_expires_at, completed_at, expires_at)
		VALUES ($1, $2, $3, 'fp', 2, 1, 1, '\xdeadbeef'::BYTEA, now(), now() + interval '1 hour', now(), now() + interval '1 hour')`, id.Tenant, id.Namespace, id.Key); err != nil {
		t.Fatal(err)
	}
}

var pgHarness = harness{base: postgresURL}
