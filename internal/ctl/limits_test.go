package ctl

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage"
)

// TestIdemctlLimits: idemctl adds no limits of its own to what idemd
// enforces: values at idemd's limits (the defaults, or raised ones) are
// accepted, and one past is refused with an error naming the field, the
// record left as it was.
func TestIdemctlLimits(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	file := func(name string, n int) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, bytes.Repeat([]byte{0xc3}, n), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name   string
		lim    server.Limits
		key    int
		result int
		lease  time.Duration
	}{
		{"defaults", server.Limits{}, 256, 1 << 20, time.Hour},
		{"raised", server.Limits{MaxKeyBytes: 300, MaxResultBytes: 3 << 20, MaxLease: 2 * time.Hour}, 300, 3 << 20, 2 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, store := startServerOn(t, server.WithLimits(tc.lim))
			key := strings.Repeat("é", tc.key/2)
			atFile, overFile := file(tc.name+"-at", tc.result), file(tc.name+"-over", tc.result+1)
			check := func(wantCode int, wantErr string, args ...string) {
				t.Helper()
				r := run(ctx, t, nil, append([]string{"--addr", addr, "--insecure", "-o", "json"}, args...)...)
				if r.code != wantCode || !strings.Contains(r.stderr, wantErr) {
					t.Errorf("idemctl %s = exit %d, stderr %q; want exit %d naming %q", strings.Join(args[:1], " "), r.code, r.stderr, wantCode, wantErr)
				}
			}
			snapshot := func() []*storage.Record {
				recs, _, err := store.List(context.Background(), storage.ListParams{Tenant: server.DefaultTenant, Namespace: "ns", Limit: 100})
				if err != nil {
					t.Fatal(err)
				}
				return recs
			}
			check(0, "", "reserve", "--lease", tc.lease.String(), "--wait", "30s", "--retention", "720h", "--fingerprint-hex", strings.Repeat("ab", 64), "ns", key)
			before := snapshot()
			check(1, "key", "reserve", "ns", key+"k")
			check(1, "lease_ttl", "reserve", "--lease", (tc.lease + time.Nanosecond).String(), "ns", key)
			check(1, "wait", "reserve", "--wait", "30.000000001s", "ns", key)
			check(1, "retention", "reserve", "--retention", "720h0m0.000000001s", "ns", key)
			check(1, "fingerprint", "reserve", "--fingerprint-hex", strings.Repeat("ab", 65), "ns", key)
			check(1, "result", "complete", "--body-file", overFile, "ns", key, "1")
			check(1, "key", "lookup", "ns", key+"k")
			check(1, "key", "release", "ns", key+"k", "1")
			check(1, "key", "delete", "ns", key+"k")
			check(1, "key", "force-release", "ns", key+"k")
			check(1, "key_prefix", "list", "--prefix", key+"k", "ns")
			if after := snapshot(); len(after) != 1 || !reflect.DeepEqual(after[0], before[0]) {
				t.Errorf("records changed on refusal: %+v, want %+v", after, before)
			}
			check(1, "tenant", "reserve", "--tenant", strings.Repeat("t", 129), "ns", key)
			check(1, "namespace", "reserve", strings.Repeat("n", 257), key)
			check(0, "", "reserve", "--tenant", strings.Repeat("t", 128), strings.Repeat("n", 256), key)
			check(0, "", "complete", "--body-file", atFile, "ns", key, "1")
			if r := run(ctx, t, nil, "--addr", addr, "--insecure", "-o", "json", "lookup", "ns", key); r.code != 0 || !strings.Contains(r.stdout, `"state"`) {
				t.Errorf("lookup = exit %d, %q", r.code, r.stderr)
			}
			rec, err := store.Lookup(context.Background(), storage.ID{Tenant: server.DefaultTenant, Namespace: "ns", Key: key})
			if err != nil || rec.State != storage.StateCompleted || !bytes.Equal(rec.Result.Body, bytes.Repeat([]byte{0xc3}, tc.result)) {
				t.Errorf("record = %v, want COMPLETED with the %d-byte body byte for byte", err, tc.result)
			}
		})
	}
}
