package policy

import (
	"context"
	"errors"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

// slowOpens counts the opens of policytest:// stores, each of which fails
// once another open is in flight at the same time (or after 5 s alone),
// as a SQL store fails after its connect_retry.
var slowOpens struct {
	sync.Mutex
	n, inFlight int
	both        chan struct{}
}

func init() {
	storage.Register("policytest", func(ctx context.Context, u *url.URL, _ storage.OpenOptions) (storage.Store, error) {
		slowOpens.Lock()
		slowOpens.n++
		slowOpens.inFlight++
		if slowOpens.inFlight == 2 {
			close(slowOpens.both)
		}
		both := slowOpens.both
		slowOpens.Unlock()
		defer func() {
			slowOpens.Lock()
			slowOpens.inFlight--
			slowOpens.Unlock()
		}()
		select {
		case <-both:
			return nil, errors.New("idem: cannot connect to " + u.Host)
		case <-time.After(5 * time.Second):
			return nil, errors.New("idem: cannot connect to " + u.Host + " (opened alone)")
		}
	})
}

// Patterns naming one unreachable store open it once and report it once;
// two unreachable stores are opened together, so a start with both down
// waits one connect_retry, not one per pattern.
func TestUnreachableStoresOpenOnceAndTogether(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	slowOpens.Lock()
	slowOpens.n, slowOpens.both = 0, make(chan struct{})
	slowOpens.Unlock()
	path := filepath.Join(t.TempDir(), "p.yaml")
	writePolicy(t, path, "namespaces:\n  a.*:\n    store: policytest://db-a\n  a.b:\n    store: policytest://db-a\n  c.*:\n    store: policytest://db-c\n")
	r, err := Load(ctx, Options{Path: path, PingTimeout: time.Second})
	if err == nil {
		r.Close(ctx)
		t.Fatal("Load() = nil error, want the stores' failures")
	}
	msg := err.Error()
	if strings.Contains(msg, "opened alone") {
		t.Errorf("the stores were opened one after the other: %s", msg)
	}
	if n := strings.Count(msg, "cannot open store policytest://db-a"); n != 1 {
		t.Errorf("db-a reported %d times, want once: %s", n, msg)
	}
	if !strings.Contains(msg, `p.yaml:2: "a.*": cannot open store policytest://db-a`) || !strings.Contains(msg, `p.yaml:6: "c.*": cannot open store policytest://db-c`) {
		t.Errorf("Load() error = %s, want each store's failure at its first pattern's line", msg)
	}
	slowOpens.Lock()
	defer slowOpens.Unlock()
	if slowOpens.n != 2 {
		t.Errorf("%d opens, want 2 (one per URL)", slowOpens.n)
	}
}
