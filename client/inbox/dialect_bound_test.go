package inbox

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

// handle is a DB of its own per value, as an acquired *pgxpool.Conn is:
// pgxpool hands out a new *Conn on every Acquire.
type handle struct{ DB }

func (*handle) QueryRow(context.Context, string, ...any) pgx.Row { return versionRow{} }

type versionRow struct{}

func (versionRow) Scan(dest ...any) error {
	*dest[0].(*string) = "PostgreSQL 16.4"
	return nil
}

// TestDialectCacheIsBounded: a consumer that passes Process a connection
// acquired per message (each a new *pgxpool.Conn) must not grow the
// dialect cache by one entry per message for good, pinning every
// released connection wrapper (and its pool) with it.
func TestDialectCacheIsBounded(t *testing.T) {
	ctx := context.Background()
	t.Cleanup(func() { dialects.Clear(); cached.Store(0) })
	const handles = 5000
	for range handles {
		if d, err := DetectDialect(ctx, &handle{}); err != nil || d != PostgreSQL {
			t.Fatalf("DetectDialect() = %v, %v; want PostgreSQL, nil", d, err)
		}
	}
	n := 0
	dialects.Range(func(any, any) bool { n++; return true })
	if n >= handles/2 {
		t.Errorf("dialect cache holds %d entries after %d one-off handles, want it bounded", n, handles)
	}
}
