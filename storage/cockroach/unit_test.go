package cockroach

import (
	"bytes"
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
)

func TestCodecRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		r    *storage.Result
	}{
		{"Nil", nil},
		{"Empty", &storage.Result{}},
		{"Full", &storage.Result{
			Code: -7, Message: "nope", Body: []byte{0, 1, 2},
			Details:  []storage.Detail{{TypeURL: "type.googleapis.com/x", Value: []byte("v")}, {TypeURL: "", Value: nil}},
			Metadata: map[string]string{"b": "2", "a": "1", "": ""},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := encodeResult(tc.r)
			got, err := decodeResult(b)
			if err != nil {
				t.Fatalf("decodeResult() error = %v", err)
			}
			if (tc.r == nil) != (got == nil) || !got.Equal(tc.r) {
				t.Errorf("decodeResult(encodeResult(%+v)) = %+v", tc.r, got)
			}
			if !bytes.Equal(b, encodeResult(tc.r.Clone())) {
				t.Error("encodeResult() is not deterministic")
			}
			for i := range len(b) {
				if _, err := decodeResult(b[:i]); err == nil && i > 0 {
					t.Fatalf("decodeResult(truncated to %d bytes) error = nil, want errCorrupt", i)
				}
			}
		})
	}
	cp := &storage.Checkpoint{Phase: "charged", Data: []byte("id-42")}
	got, err := decodeCheckpoint(encodeCheckpoint(cp))
	if err != nil || got.Phase != cp.Phase || !bytes.Equal(got.Data, cp.Data) {
		t.Errorf("decodeCheckpoint(encodeCheckpoint(%+v)) = %+v, %v", cp, got, err)
	}
	if _, err := decodeCheckpoint([]byte{9}); !errors.Is(err, errCorrupt) {
		t.Errorf("decodeCheckpoint(bad version) error = %v, want errCorrupt", err)
	}
}

func TestParseConfig(t *testing.T) {
	u, _ := url.Parse("postgresql://u:pw@db.example:26257/idem?sslmode=disable&pool_max_conns=7&statement_timeout=2s&connect_retry=0&sweep_interval=30s&sweep_batch=50&multi_region=true&search_path=s1&application_name=idem%20eu%2Bone")
	c, err := parseConfig(u)
	if err != nil {
		t.Fatalf("parseConfig() error = %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"where", c.where, "db.example:26257/idem"},
		{"pool_max_conns", c.pool.MaxConns, int32(7)},
		{"statement_timeout", c.pool.ConnConfig.RuntimeParams["statement_timeout"], "2000"},
		{"search_path", c.pool.ConnConfig.RuntimeParams["search_path"], "s1"},
		{"application_name", c.pool.ConnConfig.RuntimeParams["application_name"], "idem eu+one"},
		{"connect_retry", c.connectRetry, time.Duration(0)},
		{"sweep_interval", c.sweepInterval, 30 * time.Second},
		{"sweep_batch", c.sweepBatch, 50},
		{"multi_region", c.multiRegion, true},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	for _, p := range []string{ParamConnectRetry, ParamSweepInterval, ParamSweepBatch, ParamMultiRegion} {
		if _, ok := c.pool.ConnConfig.RuntimeParams[p]; ok {
			t.Errorf("idem parameter %s reached pgx", p)
		}
	}
}

// TestPoolMaxConnsDefault checks that a URL without pool_max_conns gets
// idem's default, not pgx's max(4, NumCPU), and that an explicit value wins.
func TestPoolMaxConnsDefault(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want int32
	}{
		{"postgres://db.example/idem", defaultPoolMaxConns},
		{"postgres://db.example/idem?sslmode=disable&statement_timeout=2s", defaultPoolMaxConns},
		{"postgres://db.example/idem?pool_max_conns=5", 5},
		{"postgres://db.example/idem?pool_max_conns=200", 200},
	} {
		t.Run(tc.url, func(t *testing.T) {
			u, _ := url.Parse(tc.url)
			c, err := parseConfig(u)
			if err != nil {
				t.Fatalf("parseConfig() error = %v", err)
			}
			if got := c.pool.MaxConns; got != tc.want {
				t.Errorf("MaxConns = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestOpenByURL(t *testing.T) {
	u := migratedURL(t, postgresURL(t))
	for _, scheme := range []string{"postgres", "postgresql"} {
		t.Run(scheme, func(t *testing.T) {
			pu, _ := url.Parse(u)
			pu.Scheme = scheme
			s, err := storage.Open(testCtx(t), pu.String(), storage.OpenOptions{Logger: quiet})
			if err != nil {
				t.Fatalf("storage.Open(%s://) error = %v", scheme, err)
			}
			defer s.Close()
			cs, ok := s.(*Store)
			if !ok {
				t.Fatalf("storage.Open(%s://) = %T, want *cockroach.Store", scheme, s)
			}
			if cs.Dialect() != DialectPostgres || cs.ServerVersion() == "" {
				t.Errorf("Dialect(), ServerVersion() = %q, %q; want %q and a version", cs.Dialect(), cs.ServerVersion(), DialectPostgres)
			}
			if err := s.Ping(context.Background()); err != nil {
				t.Errorf("Ping() error = %v", err)
			}
		})
	}
}

// TestParseConfigRefuses checks that a bad URL is refused naming what is
// wrong and never echoing a password, in the URL's user info or its query.
func TestParseConfigRefuses(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"postgres://u@db/idem?password=s3cret&sslmode=bogus", "password=xxxxx"},
		{"postgres://u:s3cret@db/idem?sslpassword=s3cret&sslmode=bogus", "sslpassword=xxxxx"},
		{"postgres://u:s3cret@db/idem?statement_timeout=1s&statement_timeout=2s", "statement_timeout"},
		{"postgres://u:s3cret@db/idem?sslmode=disable&sslmode=require", "sslmode"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			// Open's path: storage.ParseURL (repeated parameters), then
			// parseConfig (pgx's own checks).
			u, err := storage.ParseURL(tc.url)
			if err == nil {
				_, err = parseConfig(u)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("ParseURL, parseConfig error = %v, want one naming %q without the password", err, tc.want)
			}
		})
	}
}

// TestStatementTimeoutBounds checks the statement_timeout idem hands the
// server in milliseconds: a positive duration below 1ms must not become
// "0", which means no timeout at all, and one past the server's int range
// (about 24.8 days) is refused at parse time rather than by every login.
func TestStatementTimeoutBounds(t *testing.T) {
	for _, tc := range []struct{ value, want string }{
		{"500us", "1"},
		{"1500us", "2"},
		{"2s", "2000"},
		{"596h", "2145600000"},
	} {
		u, _ := url.Parse("postgres://db.example/idem?statement_timeout=" + tc.value)
		c, err := parseConfig(u)
		if err != nil {
			t.Errorf("parseConfig(statement_timeout=%s) error = %v", tc.value, err)
			continue
		}
		if got := c.pool.ConnConfig.RuntimeParams["statement_timeout"]; got != tc.want {
			t.Errorf("parseConfig(statement_timeout=%s) statement_timeout = %q, want %q", tc.value, got, tc.want)
		}
	}
	u, _ := url.Parse("postgres://db.example/idem?statement_timeout=1000h")
	if _, err := parseConfig(u); err == nil || !strings.Contains(err.Error(), ParamStatementTimeout) {
		t.Errorf("parseConfig(statement_timeout=1000h) error = %v, want one naming %s", err, ParamStatementTimeout)
	}
}
