package ctl

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/idemhq/idem/server/auth"
)

// maxTokenLifetime is the longest --expires: longer is a typo, not a plan.
const maxTokenLifetime = 100 * 365 * 24 * time.Hour

type tokenOpts struct {
	role    string
	expires time.Duration
	name    string
}

func tokenFlags(fs *flag.FlagSet) any {
	o := &tokenOpts{}
	fs.StringVar(&o.role, "role", "client", "role of the token: client or admin")
	fs.DurationVar(&o.expires, "expires", 0, "lifetime of the token, e.g. 2160h (0: never expires)")
	fs.StringVar(&o.name, "name", "", "a name for the token in the tokens file, to find it when revoking")
	return o
}

// runToken mints a bearer token offline: the token is printed once, and the
// line to append to idemd's --tokens-file holds only its SHA-256.
func runToken(_ context.Context, r *invocation, pos []string, opts any) error {
	o := opts.(*tokenOpts)
	if len(pos) != 1 || pos[0] != "mint" {
		return usagef("token takes one argument: mint")
	}
	if r.g.tenant == "" {
		return usagef("token mint needs --tenant")
	}
	var expires time.Time
	if o.expires < 0 {
		return usagef("--expires must not be negative")
	}
	if o.expires > 0 {
		// Rounded up: the tokens file holds whole seconds, and a token must
		// not expire before the lifetime asked for. Past 100 years the sum
		// would wrap around time.Duration (and the token be born expired).
		if o.expires > maxTokenLifetime {
			return usagef("--expires %v is longer than %v; use 0 for a token that never expires", o.expires, maxTokenLifetime)
		}
		expires = time.Now().Add(o.expires + time.Second - 1).UTC().Truncate(time.Second)
	}
	token, line, err := auth.MintToken(r.g.tenant, auth.Role(o.role), expires, o.name)
	if err != nil {
		return usageError{err}
	}
	if r.g.output == "json" {
		return writeJSON(r.env.Stdout, map[string]string{"token": token, "tokens_file_line": line})
	}
	w := r.env.Stdout
	fmt.Fprintf(w, "token (shown once; give it to the caller as IDEM_TOKEN):\n  %s\n", token)
	fmt.Fprintf(w, "append to idemd's --tokens-file:\n  %s\n", line)
	return nil
}
