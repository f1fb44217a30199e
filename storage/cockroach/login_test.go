package cockroach

import (
	"bytes"
	"context"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"
)

// A database that answers and refuses the login (no such role, no such
// database) fails Open at once with what it said, instead of retrying
// for connect_retry as if it were unreachable.
func TestOpenRefusedLoginFailsAtOnce(t *testing.T) {
	base, err := url.Parse(postgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	noRole, noDB, noParam, badValue := *base, *base, *base, *base
	noRole.User = url.User("idem_no_such_role")
	noDB.Path = "/idem_no_such_database"
	// Run-time parameters the server checks at login (pgx sends the ones
	// it does not know itself as such).
	q := noParam.Query()
	q.Set("idem_no_such_param", "1")
	noParam.RawQuery = q.Encode()
	q = badValue.Query()
	q.Set("DateStyle", "idem_no_such_style")
	badValue.RawQuery = q.Encode()
	for name, u := range map[string]*url.URL{"role": &noRole, "database": &noDB, "parameter": &noParam, "value": &badValue} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			q := u.Query()
			q.Set("connect_retry", "10m")
			u.RawQuery = q.Encode()
			var logs bytes.Buffer
			_, err := Open(ctx, u.String(), slog.New(slog.NewJSONHandler(&logs, nil)))
			if err == nil {
				t.Fatal("Open() = nil error, want the refused login")
			}
			if !strings.Contains(err.Error(), "refused the login") || !strings.Contains(err.Error(), "idem_no_such_") {
				t.Errorf("Open() error = %v, want the refused login and what the database said", err)
			}
			if strings.Contains(logs.String(), "retrying") {
				t.Errorf("Open() retried a refused login:\n%s", logs.String())
			}
		})
	}
}
