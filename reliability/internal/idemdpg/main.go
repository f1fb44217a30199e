// Command idemdpg is cmd/idemd with the PostgreSQL/CockroachDB backend
// linked in, for the reliability tests against PostgreSQL: cmd/idemd does
// not register the postgres:// scheme yet. Once it does, the tests should
// run cmd/idemd and this command should go.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/idemhq/idem/server/idemd"

	// What cmd/idemd links, and the PostgreSQL backend.
	_ "github.com/idemhq/idem/server/idemdext"
	_ "github.com/idemhq/idem/server/policy"
	_ "github.com/idemhq/idem/storage/cockroach"
	_ "github.com/idemhq/idem/storage/memory"
	_ "github.com/idemhq/idem/storage/pebble"
	_ "github.com/idemhq/idem/storage/redis"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	code := idemd.Main(ctx, os.Args[1:], os.LookupEnv, os.Stderr)
	stop()
	os.Exit(code)
}
