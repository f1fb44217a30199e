package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"strings"
	"sync"

	"github.com/jonboulle/clockwork"
)

// OpenOptions are what the server hands every backend it opens.
type OpenOptions struct {
	// Logger receives the backend's own logs; nil means slog.Default().
	Logger *slog.Logger
	// Clock is the node clock of embedded backends (memory, pebble); nil
	// means the real clock. Backends with a server-side clock ignore it.
	Clock clockwork.Clock
}

// Opener opens a store from its URL.
type Opener func(ctx context.Context, u *url.URL, opts OpenOptions) (Store, error)

var (
	openersMu sync.RWMutex
	openers   = map[string]Opener{}
)

// Register makes a backend available under a URL scheme. Backends call it
// from init, so a binary offers exactly the backends it imports.
func Register(scheme string, o Opener) {
	openersMu.Lock()
	defer openersMu.Unlock()
	openers[scheme] = o
}

// Open opens the store a URL names, e.g. "pebble://./idem-data",
// "memory://", "postgres://host/db", "redis://host:6379/0".
func Open(ctx context.Context, rawURL string, opts OpenOptions) (Store, error) {
	u, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	openersMu.RLock()
	o, ok := openers[strings.ToLower(u.Scheme)]
	schemes := make([]string, 0, len(openers))
	for s := range openers {
		schemes = append(schemes, s+"://")
	}
	openersMu.RUnlock()
	if !ok {
		sort.Strings(schemes)
		return nil, fmt.Errorf("idem: store URL scheme %q is not supported (have %s)", u.Scheme, strings.Join(schemes, ", "))
	}
	return o(ctx, u, opts)
}

// ParseURL parses a store URL and refuses what a backend would read other
// than meant: a '#' (unescaped in a password or path, it cuts the URL
// short) and a parameter given twice (backends keep one of them). Its
// errors never quote the URL, which may hold a password.
func ParseURL(rawURL string) (*url.URL, error) {
	if strings.Contains(rawURL, "#") {
		return nil, errors.New("idem: store URL contains '#'; escape it as %23 in a password or path")
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("idem: store URL: %s", redact(rawURL, err))
	}
	if err := checkParams(u); err != nil {
		return nil, err
	}
	return u, nil
}

// checkParams refuses a URL query naming a parameter twice.
func checkParams(u *url.URL) error {
	var twice []string
	for k, vs := range u.Query() {
		if len(vs) > 1 {
			twice = append(twice, k)
		}
	}
	if len(twice) > 0 {
		sort.Strings(twice)
		return fmt.Errorf("idem: store URL parameter %s is given more than once", strings.Join(twice, ", "))
	}
	return nil
}

// redact drops the URL from a parse error. Parts of a password can still
// show in what url.Parse quotes (a port, an escape), so with credentials
// in the URL only a hint is kept.
func redact(rawURL string, err error) string {
	if strings.Contains(rawURL, "@") {
		return "cannot be parsed (percent-encode reserved characters in the user name and password)"
	}
	if ue, ok := err.(*url.Error); ok {
		err = ue.Err
	}
	return err.Error()
}

// Redacted returns the URL with any password replaced, for logs and errors.
// A URL without a password comes back as given: re-serialising would turn
// "memory://" into "memory:", which is not what the operator typed.
func Redacted(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable URL)"
	}
	_, has := u.User.Password()
	q, inQuery := redactQuery(u.RawQuery)
	if !has && !inQuery {
		return rawURL
	}
	u.RawQuery = q
	return u.Redacted()
}

// redactQuery hides the values of password parameters (pgx reads password
// and sslpassword), keeping the rest of the query as written.
func redactQuery(raw string) (string, bool) {
	parts := strings.Split(raw, "&")
	found := false
	for i, p := range parts {
		k, _, _ := strings.Cut(p, "=")
		if uk, err := url.QueryUnescape(k); err == nil {
			k = uk
		}
		if strings.HasSuffix(strings.ToLower(k), "password") {
			parts[i], found = url.QueryEscape(k)+"=xxxxx", true
		}
	}
	return strings.Join(parts, "&"), found
}
