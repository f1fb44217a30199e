package policy

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/idemhq/idem/internal/testenv"
	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/pebble"
)

// lookup reads one record of tenant "default" directly from st.
func lookup(ctx context.Context, st storage.Store, ns, key string) (*storage.Record, error) {
	return st.Lookup(ctx, storage.ID{Tenant: server.DefaultTenant, Namespace: ns, Key: key})
}

// checkPlacement wants each (ns, key) completed in the store at want and
// absent from the others.
func checkPlacement(t *testing.T, stores map[string]storage.Store, placed map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	for ns, want := range placed {
		for name, st := range stores {
			rec, err := lookup(ctx, st, ns, "k1")
			switch {
			case name == want && err != nil:
				t.Errorf("store %s: Lookup(%s/k1) = %v, want the completed record", name, ns, err)
			case name == want && rec.State != storage.StateCompleted:
				t.Errorf("store %s: Lookup(%s/k1) state = %v, want COMPLETED", name, ns, rec.State)
			case name != want && !errors.Is(err, storage.ErrNotFound):
				t.Errorf("store %s: Lookup(%s/k1) = %v, %v; want ErrNotFound (it belongs in %s)", name, ns, rec, err, want)
			}
		}
	}
}

// TestRoutingTwoPebbleStores routes two namespaces to two Pebble
// directories, then opens each directory after the server stopped.
func TestRoutingTwoPebbleStores(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	path := filepath.Join(dir, "p.yaml")
	writePolicy(t, path, fmt.Sprintf(`
namespaces:
  payments.*:
    store: %s
  /notify.v1.Notify/Send:
    store: %s
  audit.*:
    store: %s   # shares a's store: opened once
`, pebbleURL(a), pebbleURL(b), pebbleURL(a)))
	f := serve(t, path, server.DefaultLimits())
	if got := len(f.r.Stores()); got != 2 {
		t.Errorf("Stores() = %d stores, want 2 (one per distinct URL)", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	for _, ns := range []string{"payments.charge", "/notify.v1.Notify/Send", "audit.log", "other"} {
		if err := reserveComplete(ctx, f.client, ns, "k1", []byte(ns)); err != nil {
			t.Fatalf("Reserve/Complete in %s = %v", ns, err)
		}
	}
	base := f.base
	f.stop() // closes the Pebble stores, so the directories can be opened

	sa, err := pebble.Open(a)
	if err != nil {
		t.Fatalf("pebble.Open(a) = %v (still held by the resolver?)", err)
	}
	defer sa.Close()
	sb, err := pebble.Open(b)
	if err != nil {
		t.Fatalf("pebble.Open(b) = %v", err)
	}
	defer sb.Close()
	_ = base // closed by stop; its records are gone with it, so check only a and b
	checkPlacement(t, map[string]storage.Store{"a": sa, "b": sb}, map[string]string{
		"payments.charge":        "a",
		"audit.log":              "a",
		"/notify.v1.Notify/Send": "b",
	})
	for _, ns := range []string{"other"} {
		for name, st := range map[string]storage.Store{"a": sa, "b": sb} {
			if _, err := lookup(ctx, st, ns, "k1"); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("store %s: Lookup(%s/k1) = %v, want ErrNotFound (default goes to the server's store)", name, ns, err)
			}
		}
	}
}

// TestRoutingPebbleAndRedis routes payments to Pebble and notifications to
// the real Redis, and reads each store directly.
func TestRoutingPebbleAndRedis(t *testing.T) {
	raw := testenv.RedisURL(t)
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("key_prefix", "idem-policy-test-"+uuid.NewString())
	u.RawQuery = q.Encode()
	redisURL := u.String()

	dir := t.TempDir()
	path := filepath.Join(dir, "p.yaml")
	writePolicy(t, path, fmt.Sprintf(`
namespaces:
  payments.*:
    store: %s
  notify.*:
    store: "%s"
`, pebbleURL(filepath.Join(dir, "pebble")), redisURL))
	f := serve(t, path, server.DefaultLimits())
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	for _, ns := range []string{"payments.charge", "notify.send"} {
		if err := reserveComplete(ctx, f.client, ns, "k1", []byte(ns)); err != nil {
			t.Fatalf("Reserve/Complete in %s = %v", ns, err)
		}
	}
	f.stop()

	sp, err := pebble.Open(filepath.Join(dir, "pebble"))
	if err != nil {
		t.Fatalf("pebble.Open() = %v", err)
	}
	defer sp.Close()
	sr, err := storage.Open(ctx, redisURL, storage.OpenOptions{})
	if err != nil {
		t.Fatalf("storage.Open(redis) = %v", err)
	}
	defer sr.Close()
	checkPlacement(t, map[string]storage.Store{"pebble": sp, "redis": sr}, map[string]string{
		"payments.charge": "pebble",
		"notify.send":     "redis",
	})
}

func TestNamespaceLimits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.yaml")
	writePolicy(t, path, `
namespaces:
  strict.*:
    max_lease: 1m
    max_retention: 10m
    max_result_bytes: 16
  outcome-only:
    store_results: false
`)
	f := serve(t, path, server.DefaultLimits())
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()

	invalid := []struct {
		name  string
		call  func() error
		field string
	}{
		{"lease above the namespace max", func() error {
			_, err := f.client.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "strict.a", Key: "k", LeaseTtl: dur(2 * time.Minute)})
			return err
		}, "lease_ttl"},
		{"retention above the namespace max", func() error {
			_, err := f.client.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "strict.a", Key: "k", Retention: dur(time.Hour)})
			return err
		}, "retention"},
		{"result above the namespace max", func() error {
			res, err := f.client.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "strict.a", Key: "big"})
			if err != nil {
				return fmt.Errorf("Reserve: %w", err)
			}
			_, err = f.client.Complete(ctx, &idemv1.CompleteRequest{Namespace: "strict.a", Key: "big", Token: res.GetRecord().GetToken(),
				Result: &idemv1.Result{Body: []byte(strings.Repeat("x", 17))}})
			return err
		}, "result"},
	}
	for _, tt := range invalid {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if got := status.Code(err); got != codes.InvalidArgument {
				t.Fatalf("code = %v (%v), want InvalidArgument", got, err)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("error = %q, want it to name %s", err, tt.field)
			}
		})
	}

	t.Run("the same lease elsewhere is fine", func(t *testing.T) {
		_, err := f.client.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "lenient", Key: "k", LeaseTtl: dur(2 * time.Minute)})
		if err != nil {
			t.Errorf("Reserve(lenient, lease 2m) = %v, want success", err)
		}
	})

	t.Run("store_results false replays the code only", func(t *testing.T) {
		res, err := f.client.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "outcome-only", Key: "k", Fingerprint: []byte("fp")})
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.client.Complete(ctx, &idemv1.CompleteRequest{Namespace: "outcome-only", Key: "k", Token: res.GetRecord().GetToken(),
			Result: &idemv1.Result{Code: 6, Message: "card declined", Body: []byte("secret response")}})
		if err != nil {
			t.Fatal(err)
		}
		again, err := f.client.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "outcome-only", Key: "k", Fingerprint: []byte("fp")})
		if err != nil {
			t.Fatal(err)
		}
		if got := again.GetOutcome(); got != idemv1.ReserveOutcome_RESERVE_OUTCOME_COMPLETED {
			t.Fatalf("replay outcome = %v, want COMPLETED", got)
		}
		r := again.GetRecord().GetResult()
		if r.GetCode() != 6 || len(r.GetBody()) != 0 || r.GetMessage() != "" {
			t.Errorf("replayed result = code %d, message %q, body %q; want code 6 and no message or body", r.GetCode(), r.GetMessage(), r.GetBody())
		}
	})

	t.Run("store_results default replays the body", func(t *testing.T) {
		if err := reserveComplete(ctx, f.client, "lenient", "k2", []byte("kept")); err != nil {
			t.Fatal(err)
		}
		again, err := f.client.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "lenient", Key: "k2", Fingerprint: []byte("fp")})
		if err != nil {
			t.Fatal(err)
		}
		if got := string(again.GetRecord().GetResult().GetBody()); got != "kept" {
			t.Errorf("replayed body = %q, want %q", got, "kept")
		}
	})
}

// TestServerStoreURLIsShared: a pattern naming idemd's own --store URL
// gets that store, not a second one (Pebble would refuse a second open).
func TestServerStoreURLIsShared(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.yaml")
	writePolicy(t, path, "namespaces:\n  a.*:\n    store: memory://\n  b.*:\n    store: memory://?shards=4\n")
	f := serve(t, path, server.DefaultLimits())
	if st, _ := f.r.Resolve("t", "a.x"); st != f.base {
		t.Errorf("Resolve(a.x) store = %p, want the server's own store %p", st, f.base)
	}
	if st, _ := f.r.Resolve("t", "b.x"); st == nil || st == f.base {
		t.Errorf("Resolve(b.x) store = %v, want a store of its own", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	writePolicy(t, path, "namespaces:\n  b.*:\n    store: memory://?shards=4\n")
	if err := f.r.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	drained(t, f.r)
	if _, err := lookup(ctx, f.base, "a.x", "k"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("server's store after a reload that stopped naming it: Lookup() = %v, want ErrNotFound (never closed by the policy)", err)
	}
}
