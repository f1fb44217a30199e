package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/idemhq/idem/internal/testenv"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server/auth"
	"github.com/idemhq/idem/server/idemd"
)

// logField is field of the first JSON log line with message msg, or "".
func logField(stderr, msg, field string) string {
	for _, line := range strings.Split(stderr, "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
			s, _ := rec[field].(string)
			return s
		}
	}
	return ""
}

func TestPlaintextOnReachableAddress(t *testing.T) {
	ctx := testContext(t)
	code, stderr := runIdemd(ctx, t, nil, "--listen", "0.0.0.0:0", "--store", "memory://")
	if code != 2 {
		t.Errorf("exit code = %d, want 2 (stderr %q)", code, stderr)
	}
	if want := `idemd: refusing to listen on "0.0.0.0:0" without TLS`; !strings.HasPrefix(stderr, want) || strings.Count(stderr, "\n") != 1 {
		t.Errorf("stderr = %q, want one line starting %q", stderr, want)
	}
	// --insecure is the operator's explicit choice.
	d := startIdemd(ctx, t, "--listen", "0.0.0.0:0", "--insecure", "--store", "memory://")
	if code := d.stop(ctx, t); code != 0 {
		t.Errorf("idemd --insecure exit code = %d, want 0; stderr:\n%s", code, d.stderr)
	}
}

func TestTokensAuthenticateAndConfineCallers(t *testing.T) {
	ctx := testContext(t)
	tokA, lineA, err := auth.MintToken("tenant-a", auth.RoleClient, time.Time{}, "a-api")
	if err != nil {
		t.Fatal(err)
	}
	tokAdmin, lineAdmin, err := auth.MintToken("tenant-a", auth.RoleAdmin, time.Time{}, "a-ops")
	if err != nil {
		t.Fatal(err)
	}
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte(lineA+"\n"+lineAdmin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startIdemd(ctx, t, "--store", "memory://", "--tokens-file", tokens)
	conn := client(t, d.addr)
	admin := idemv1.NewAdminServiceClient(dialConn(t, d.addr))
	as := func(tok string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}

	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"no token", func() error {
			_, err := conn.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k"})
			return err
		}, codes.Unauthenticated},
		{"unknown token", func() error {
			_, err := conn.Reserve(as("idem_not-a-real-token"), &idemv1.ReserveRequest{Namespace: "ns", Key: "k"})
			return err
		}, codes.Unauthenticated},
		{"own tenant", func() error {
			_, err := conn.Reserve(as(tokA), &idemv1.ReserveRequest{Namespace: "ns", Key: "k"})
			return err
		}, codes.OK},
		{"other tenant", func() error {
			_, err := conn.Reserve(as(tokA), &idemv1.ReserveRequest{Tenant: "tenant-b", Namespace: "ns", Key: "k"})
			return err
		}, codes.PermissionDenied},
		{"admin call without token", func() error {
			_, err := admin.Stats(ctx, &idemv1.StatsRequest{Tenant: "tenant-b"})
			return err
		}, codes.Unauthenticated},
		{"admin call with client token", func() error {
			_, err := admin.Stats(as(tokA), &idemv1.StatsRequest{})
			return err
		}, codes.PermissionDenied},
		{"admin call with admin token", func() error {
			_, err := admin.Stats(as(tokAdmin), &idemv1.StatsRequest{})
			return err
		}, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := status.Code(tt.call()); got != tt.want {
				t.Errorf("code = %v, want %v", got, tt.want)
			}
		})
	}
	if code := d.stop(ctx, t); code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}
	// Every admin call was audited, refused or not; the unauthenticated
	// one without the tenant it claimed.
	var audits []map[string]any
	for _, line := range strings.Split(d.stderr.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "audit" {
			audits = append(audits, rec)
		}
	}
	want := []map[string]any{
		{"action": "Stats", "code": "Unauthenticated", "who": nil, "tenant": nil},
		{"action": "Stats", "code": "PermissionDenied", "who": "token:a-api", "tenant": "tenant-a"},
		{"action": "Stats", "code": "OK", "who": "token:a-ops", "tenant": "tenant-a"},
	}
	if len(audits) != len(want) {
		t.Fatalf("%d audit lines, want %d:\n%s", len(audits), len(want), d.stderr)
	}
	for i, w := range want {
		for k, v := range w {
			if audits[i][k] != v {
				t.Errorf("audit line %d: %s = %v, want %v", i, k, audits[i][k], v)
			}
		}
		if audits[i]["peer"] == nil {
			t.Errorf("audit line %d has no peer", i)
		}
	}
	if logField(d.stderr.String(), "credentials refused", "method") == "" {
		t.Errorf("no log line for the refused credentials in:\n%s", d.stderr)
	}
	if strings.Contains(d.stderr.String(), `"msg":"finished call"`) {
		t.Errorf("call log without --log-calls:\n%s", d.stderr)
	}
}

func TestCallLog(t *testing.T) {
	ctx := testContext(t)
	tok, line, err := auth.MintToken("tenant-a", auth.RoleClient, time.Time{}, "a-api")
	if err != nil {
		t.Fatal(err)
	}
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startIdemd(ctx, t, "--store", "memory://", "--tokens-file", tokens, "--log-calls")
	const key = "order-42-secret"
	asA := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	if _, err := client(t, d.addr).Reserve(asA, &idemv1.ReserveRequest{Namespace: "ns", Key: key}); err != nil {
		t.Fatal(err)
	}
	d.stop(ctx, t)
	var rec map[string]any
	for _, l := range strings.Split(d.stderr.String(), "\n") {
		if strings.Contains(l, key) {
			t.Errorf("log line shows the key: %s", l)
		}
		var r map[string]any
		if json.Unmarshal([]byte(l), &r) == nil && r["msg"] == "finished call" && r["grpc.method"] == "Reserve" {
			rec = r
		}
	}
	if rec == nil {
		t.Fatalf("no call log line for Reserve with --log-calls:\n%s", d.stderr)
	}
	if rec["tenant"] != "tenant-a" || rec["namespace"] != "ns" || rec["grpc.code"] != "OK" || rec["key_hash"] == nil {
		t.Errorf("call log line = %v, want tenant-a, ns, OK and a key hash", rec)
	}
}

func dialConn(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestPolicyStoreMetrics checks that the stores a policy file routes to
// are timed like --store, and that pebble's presence filter is exported.
func TestPolicyStoreMetrics(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.yaml")
	body := "namespaces:\n  \"notify.*\":\n    store: \"pebble://" + filepath.Join(dir, "notify") + "\"\n  default:\n"
	if err := os.WriteFile(policy, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startIdemd(ctx, t, "--store", "memory://", "--policy", policy, "--metrics-listen", "127.0.0.1:0")
	if got := logField(d.stderr.String(), "policy loaded", "file"); got != policy {
		t.Errorf("policy loaded file = %q, want %q; log:\n%s", got, policy, d.stderr)
	}
	addr := logField(d.stderr.String(), "idemd serving", "metrics_addr")
	c := client(t, d.addr)
	for _, ns := range []string{"notify.email", "notify.email", "orders"} {
		if _, err := c.Reserve(ctx, &idemv1.ReserveRequest{Namespace: ns, Key: "k", Fingerprint: []byte("f")}); err != nil {
			t.Fatal(err)
		}
	}
	metrics := httpGet(ctx, t, "http://"+addr+"/metrics")
	// A policy's store is labelled by its URL, --store's by its kind.
	pebble := "pebble://" + filepath.Join(dir, "notify")
	for _, want := range []string{
		`idem_store_op_duration_seconds_count{op="reserve",store="` + pebble + `"} 2`,
		`idem_store_op_duration_seconds_count{op="reserve",store="memory"} 1`,
		`idem_store_filter_bytes{store="` + pebble + `"}`,
		`idem_store_filter_answered_total{store="` + pebble + `"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// SIGHUP reloads the policy; without credentials there are none to
	// reload, and the log says nothing about them.
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(d.stderr.String(), `"msg":"policy reloaded"`) {
		select {
		case <-ctx.Done():
			t.Fatalf("no policy reload logged after SIGHUP:\n%s", d.stderr)
		case <-time.After(10 * time.Millisecond):
		}
	}
	d.stop(ctx, t)
	if strings.Contains(d.stderr.String(), "credentials reloaded") {
		t.Errorf("SIGHUP without credentials logged a credentials reload:\n%s", d.stderr)
	}
}

func TestServiceMetrics(t *testing.T) {
	ctx := testContext(t)
	d := startIdemd(ctx, t, "--store", "memory://", "--metrics-listen", "127.0.0.1:0")
	addr := logField(d.stderr.String(), "idemd serving", "metrics_addr")
	if addr == "" {
		t.Fatalf("no metrics_addr logged:\n%s", d.stderr)
	}
	c := client(t, d.addr)
	for range 2 {
		if _, err := c.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "orders", Key: "k", Fingerprint: []byte("f")}); err != nil {
			t.Fatal(err)
		}
	}
	body := httpGet(ctx, t, "http://"+addr+"/metrics")
	for _, want := range []string{
		`idem_reserve_outcomes_total{namespace="orders",outcome="reserved"} 1`,
		`idem_reserve_outcomes_total{namespace="orders",outcome="in_progress"} 1`,
		`idem_store_op_duration_seconds_count{op="reserve",store="memory"} 2`,
		`idem_store_info{dialect="",store="memory"} 1`,
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Reserve",grpc_service="idem.v1.IdempotencyService",grpc_type="unary"} 2`,
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Lookup",grpc_service="idem.v1.IdempotencyService",grpc_type="unary"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	d.stop(ctx, t)
}

// freshSchema is a new PostgreSQL schema on the test server, dropped at the
// end, and the store URL whose search_path selects it.
func freshSchema(ctx context.Context, t *testing.T) string {
	t.Helper()
	base := testenv.PostgresURL(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "idemd_test_" + hex.EncodeToString(b[:])
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connecting to the test database: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatal(err)
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
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	return u.String()
}

func tablesIn(ctx context.Context, t *testing.T, storeURL string) []string {
	t.Helper()
	u, _ := url.Parse(storeURL)
	schema := u.Query().Get("search_path")
	conn, err := pgx.Connect(ctx, testenv.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1", schema)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestMigrateCommand(t *testing.T) {
	ctx := testContext(t)
	store := freshSchema(ctx, t)

	code, stderr := runIdemd(ctx, t, nil, "migrate", "--store", store)
	if code != 0 {
		t.Fatalf("idemd migrate exit code = %d, want 0; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr, `"msg":"idem: applied migration"`) {
		t.Errorf("first idemd migrate logged no applied migration:\n%s", stderr)
	}
	tables := tablesIn(ctx, t, store)
	if !strings.Contains(strings.Join(tables, " "), "idem_schema_version") || len(tables) < 3 {
		t.Errorf("tables after migrate = %v, want idem's records and version tables", tables)
	}

	// The environment works as for serve; a second run changes nothing.
	code, stderr = runIdemd(ctx, t, []string{"IDEM_STORE=" + store}, "migrate")
	if code != 0 || strings.Contains(stderr, "applied migration") || !strings.Contains(stderr, "schema is up to date") {
		t.Errorf("second idemd migrate = %d, stderr:\n%s\nwant exit 0, up to date, nothing applied", code, stderr)
	}
	if again := tablesIn(ctx, t, store); strings.Join(again, " ") != strings.Join(tables, " ") {
		t.Errorf("tables after the second migrate = %v, want %v", again, tables)
	}
}

// TestMigrateCoversPolicyStores checks that idemd migrate, and serve with
// --migrate, migrate the policy file's stores as well as --store: with the
// same flags as the servers, a migration job leaves no store unmigrated.
func TestMigrateCoversPolicyStores(t *testing.T) {
	ctx := testContext(t)
	writePolicy := func(payments string) string {
		p := filepath.Join(t.TempDir(), "policy.yaml")
		body := "namespaces:\n  \"payments.*\":\n    store: \"" + payments + "\"\n  default:\n"
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	main, payments := freshSchema(ctx, t), freshSchema(ctx, t)
	code, stderr := runIdemd(ctx, t, nil, "migrate", "--store", main, "--policy", writePolicy(payments))
	if code != 0 {
		t.Fatalf("idemd migrate --policy exit code = %d, want 0; stderr:\n%s", code, stderr)
	}
	for name, store := range map[string]string{"--store": main, "the policy's payments.* store": payments} {
		if tables := tablesIn(ctx, t, store); !slices.Contains(tables, "idem_schema_version") {
			t.Errorf("tables of %s after idemd migrate --policy = %v, want idem's", name, tables)
		}
	}

	// serve --migrate, the store of payments.* unmigrated until then.
	payments = freshSchema(ctx, t)
	d := startIdemd(ctx, t, "--store", "memory://", "--policy", writePolicy(payments), "--migrate")
	c := client(t, d.addr)
	r, err := c.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "payments.charge", Key: "k"})
	if err != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
		t.Fatalf("Reserve(payments.charge) = %v, %v; want RESERVED", r, err)
	}
	if n := countRows(ctx, t, payments); n != 1 {
		t.Errorf("records in the payments.* store = %d, want 1", n)
	}

	// A policy file that does not parse stops the migration with its line.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("namespaces:\n  x:\n    bogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stderr = runIdemd(ctx, t, nil, "migrate", "--store", "memory://", "--policy", bad)
	if code != 2 || !strings.Contains(stderr, "bad.yaml:3") {
		t.Errorf("idemd migrate with a bad policy file = %d, %q; want 2 and the file's line", code, stderr)
	}
}

// countRows counts the records in a migrated schema.
func countRows(ctx context.Context, t *testing.T, storeURL string) int {
	t.Helper()
	u, _ := url.Parse(storeURL)
	conn, err := pgx.Connect(ctx, testenv.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{u.Query().Get("search_path"), "idem_records"}.Sanitize()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestMigrateWithoutMigrations(t *testing.T) {
	ctx := testContext(t)
	code, stderr := runIdemd(ctx, t, nil, "migrate", "--store", "memory://")
	if code != 0 || logField(stderr, "store has no schema migrations; nothing to do", "store") != "memory://" {
		t.Errorf("idemd migrate --store memory:// = %d, %q; want 0 and a line saying there is nothing to migrate", code, stderr)
	}
	code, stderr = runIdemd(ctx, t, nil, "migrate", "--store", "memory://", "--bogus")
	if code != 2 || !strings.HasPrefix(stderr, "idemd: flag provided but not defined: -bogus") {
		t.Errorf("idemd migrate --bogus = %d, %q; want 2 and one error line", code, stderr)
	}
}

func TestMigrateFailureIsOneLine(t *testing.T) {
	ctx := testContext(t)
	// Nothing listens on port 1; the password must not be printed.
	code, stderr := runIdemd(ctx, t, nil, "migrate", "--store", "postgres://idem:s3cret@127.0.0.1:1/idem?sslmode=disable&connect_retry=0s")
	var errLines []string
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if strings.HasPrefix(l, "idemd:") {
			errLines = append(errLines, l)
		}
	}
	if code != 2 || len(errLines) != 1 || !strings.HasPrefix(errLines[0], "idemd: cannot migrate store postgres://idem:xxxxx@127.0.0.1:1/") {
		t.Errorf("idemd migrate of an unreachable store = %d, %q; want 2 and one line naming the store", code, stderr)
	}
	if strings.Contains(stderr, "s3cret") {
		t.Errorf("stderr shows the password: %q", stderr)
	}
}

func TestServeNeedsMigratedSchema(t *testing.T) {
	ctx := testContext(t)
	store := freshSchema(ctx, t)

	code, stderr := runIdemd(ctx, t, nil, "--listen", "127.0.0.1:0", "--store", store)
	last := strings.TrimSpace(stderr)
	if i := strings.LastIndexByte(last, '\n'); i >= 0 {
		last = last[i+1:]
	}
	if code != 2 || !strings.HasPrefix(last, "idemd: cannot open store") || !strings.Contains(last, "needs migrating") || !strings.Contains(last, "idemd migrate") {
		t.Errorf("idemd on an unmigrated schema = %d, last line %q; want 2 and a line saying to run idemd migrate", code, last)
	}

	d := startIdemd(ctx, t, "--store", store, "--migrate")
	if got := logField(d.stderr.String(), "idemd serving", "dialect"); got != "postgres" {
		t.Errorf("dialect logged at start = %q, want postgres", got)
	}
	c := client(t, d.addr)
	r, err := c.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "ns", Key: "k"})
	if err != nil || r.GetOutcome() != idemv1.ReserveOutcome_RESERVE_OUTCOME_RESERVED {
		t.Fatalf("Reserve() = %v, %v; want RESERVED", r, err)
	}
	var header metadata.MD
	if _, err := c.Lookup(ctx, &idemv1.LookupRequest{Namespace: "ns", Key: "k"}, grpc.Header(&header)); err != nil {
		t.Fatalf("Lookup() error = %v", err)
	}
	if got := header.Get(idemd.DialectHeader); len(got) != 1 || got[0] != "postgres" {
		t.Errorf("Lookup header %s = %v, want [postgres]", idemd.DialectHeader, got)
	}
	if code := d.stop(ctx, t); code != 0 {
		t.Errorf("exit code = %d, want 0; stderr:\n%s", code, d.stderr)
	}
}
