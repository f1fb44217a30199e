package inbox

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
)

// fakeCRDB is a CockroachDB whose transactions always insert the marker and
// whose commits always succeed, so that only Process can refuse one.
type fakeCRDB struct{ fakePG }

func (*fakeCRDB) QueryRow(context.Context, string, ...any) pgx.Row { return crdbVersionRow{} }

type crdbVersionRow struct{}

func (crdbVersionRow) Scan(dest ...any) error {
	*dest[0].(*string) = "CockroachDB CCL v24.1.0"
	return nil
}

// TestProcessHandlerEndsTxCockroach: the cockroach-go path must refuse a
// handler's own commit too, not report the message processed.
func TestProcessHandlerEndsTxCockroach(t *testing.T) {
	t.Cleanup(func() { dialects.Clear(); cached.Store(0) })
	db := &fakeCRDB{}
	if d, err := DetectDialect(context.Background(), db); err != nil || d != CockroachDB {
		t.Fatalf("DetectDialect() = %v, %v; want CockroachDB, nil", d, err)
	}
	var commitErr error
	processed, err := Process(context.Background(), db, "projector", "m-1", func(ctx context.Context, tx pgx.Tx) error {
		commitErr = tx.Commit(ctx)
		return nil
	})
	if commitErr == nil {
		t.Error("tx.Commit() inside fn = nil, want an error")
	}
	if processed || !errors.Is(err, errEndedByFn) {
		t.Errorf("Process() = %v, %v; want false, errEndedByFn", processed, err)
	}
}
