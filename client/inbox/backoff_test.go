package inbox

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// fakePG is a PostgreSQL whose transactions always insert the marker.
type fakePG struct{ handle }

func (*fakePG) BeginTx(context.Context, pgx.TxOptions) (pgx.Tx, error) { return fakeTx{}, nil }

type fakeTx struct{ pgx.Tx }

func (fakeTx) Exec(context.Context, string, ...any) (pgconn.CommandTag, error) {
	return pgconn.NewCommandTag("INSERT 0 1"), nil
}
func (fakeTx) Commit(context.Context) error   { return nil }
func (fakeTx) Rollback(context.Context) error { return nil }

// TestNoBackoffRetries: WithBackoff(0, 0), retrying at once, must retry a
// serialization failure, not panic in the consumer on the first conflict.
func TestNoBackoffRetries(t *testing.T) {
	t.Cleanup(func() { dialects.Clear(); cached.Store(0) })
	for _, b := range [][2]int64{{0, 0}, {1, 0}, {-1, -1}} {
		calls := 0
		processed, err := Process(context.Background(), &fakePG{}, "projector", "m-1", func(context.Context, pgx.Tx) error {
			if calls++; calls < 3 {
				return &pgconn.PgError{Code: "40001"}
			}
			return nil
		}, WithBackoff(time.Duration(b[0]), time.Duration(b[1])))
		if !processed || err != nil || calls != 3 {
			t.Errorf("WithBackoff(%d, %d): Process() = %v, %v after %d calls; want true, nil after 3", b[0], b[1], processed, err, calls)
		}
	}
}
