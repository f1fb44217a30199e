package storage_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
	_ "github.com/idemhq/idem/storage/cockroach"
	_ "github.com/idemhq/idem/storage/memory"
	_ "github.com/idemhq/idem/storage/pebble"
	_ "github.com/idemhq/idem/storage/redis"
)

// TestOpenRefusesAmbiguousURLs checks what no backend may read one way
// while the operator meant another: a fragment (an unescaped # in a
// password or path cuts the URL short) and a parameter given twice. The
// error names the problem and echoes no password.
func TestOpenRefusesAmbiguousURLs(t *testing.T) {
	t.Chdir(t.TempDir())
	for _, tc := range []struct{ url, want string }{
		{"memory://?shards=4&shards=8", "shards"},
		{"memory://#x", "#"},
		{"pebble://./my#data", "#"},
		{"pebble://./d?coalesce=1&coalesce=2", "coalesce"},
		{"redis://:pa#s3cret@127.0.0.1:1/0", "#"},
		{"redis://:s3cret@127.0.0.1:1/0?wait_replicas=1&wait_replicas=0", "wait_replicas"},
		{"redis://:s3cret@127.0.0.1:1/0?pool_size=1&pool_size=2", "pool_size"},
		{"postgres://u:s3cret@127.0.0.1:1/db?password=s3cret&password=s3cret", "password"},
		{"postgres://u:s3%zzcret@127.0.0.1:1/db", "cannot be parsed"},
		{"postgres://u:pa/s3cret@127.0.0.1:1/db", "cannot be parsed"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s, err := storage.Open(ctx, tc.url, storage.OpenOptions{})
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) error = nil, want one naming %q", tc.url, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "idem: ") {
				t.Errorf("Open(%q) error = %q, want an idem: error naming %q", tc.url, err, tc.want)
			}
			if strings.Contains(err.Error(), "s3") {
				t.Errorf("Open(%q) error = %q echoes the password", tc.url, err)
			}
		})
	}
}
