package storage

import (
	"context"
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
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("idem: store URL: %w", redact(err))
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

// redact drops the URL from a parse error, since it may hold a password.
func redact(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

// Redacted returns the URL with any password replaced, for logs and errors.
// A URL without a password comes back as given: re-serialising would turn
// "memory://" into "memory:", which is not what the operator typed.
func Redacted(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable URL)"
	}
	if _, has := u.User.Password(); !has {
		return rawURL
	}
	return u.Redacted()
}
