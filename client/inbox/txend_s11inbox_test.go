package inbox_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/idemhq/idem/client/inbox"
)

// TestProcessHandlerEndsTx: a handler that commits or rolls back the
// transaction itself must not split the marker from its writes. Committing
// half-way used to commit the marker with the first half of the writes; the
// second half then failed, and every redelivery was skipped as a duplicate,
// so the rest of the message was lost for good.
func TestProcessHandlerEndsTx(t *testing.T) {
	for _, tt := range []struct {
		name string
		end  func(ctx context.Context, tx pgx.Tx) error
	}{
		{"commit", func(ctx context.Context, tx pgx.Tx) error { return tx.Commit(ctx) }},
		{"rollback", func(ctx context.Context, tx pgx.Tx) error { return tx.Rollback(ctx) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			db := newDB(t)
			ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
			defer cancel()
			processed, err := inbox.Process(ctx, db, "projector", "m-1", func(ctx context.Context, tx pgx.Tx) error {
				if err := writeEffect("m-1")(ctx, tx); err != nil {
					return err
				}
				_ = tt.end(ctx, tx) // misuse, its error ignored
				_ = writeEffect("m-1")(ctx, tx)
				return nil
			})
			if processed || err == nil {
				t.Errorf("Process() with a handler that ends the tx = %v, %v; want false and an error", processed, err)
			}
			if got := count(ctx, t, db, "SELECT count(*) FROM idem_inbox"); got != 0 {
				t.Errorf("markers after the failed try = %d, want 0", got)
			}
			if got := count(ctx, t, db, "SELECT count(*) FROM effects"); got != 0 {
				t.Errorf("effects after the failed try = %d, want 0", got)
			}
			// The redelivery applies the whole message.
			processed, err = inbox.Process(ctx, db, "projector", "m-1", func(ctx context.Context, tx pgx.Tx) error {
				if err := writeEffect("m-1")(ctx, tx); err != nil {
					return err
				}
				return writeEffect("m-1")(ctx, tx)
			})
			if !processed || err != nil {
				t.Errorf("redelivery: Process() = %v, %v; want true, nil", processed, err)
			}
			if got := count(ctx, t, db, "SELECT count(*) FROM effects"); got != 2 {
				t.Errorf("effects after the redelivery = %d, want 2", got)
			}
		})
	}
}

// TestProcessHandlerSavepointAllowed: a nested transaction (a savepoint)
// inside the handler keeps working, commit and rollback included.
func TestProcessHandlerSavepointAllowed(t *testing.T) {
	db := newDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	processed, err := inbox.Process(ctx, db, "projector", "m-1", func(ctx context.Context, tx pgx.Tx) error {
		sp, err := tx.Begin(ctx)
		if err != nil {
			return err
		}
		if err := writeEffect("undone")(ctx, sp); err != nil {
			return err
		}
		if err := sp.Rollback(ctx); err != nil {
			return err
		}
		sp, err = tx.Begin(ctx)
		if err != nil {
			return err
		}
		if err := writeEffect("m-1")(ctx, sp); err != nil {
			return err
		}
		return sp.Commit(ctx)
	})
	if !processed || err != nil {
		t.Fatalf("Process() = %v, %v; want true, nil", processed, err)
	}
	if got := count(ctx, t, db, "SELECT count(*) FROM effects WHERE msg_id = 'm-1'"); got != 1 {
		t.Errorf("effects m-1 = %d, want 1", got)
	}
	if got := count(ctx, t, db, "SELECT count(*) FROM effects WHERE msg_id = 'undone'"); got != 0 {
		t.Errorf("effects rolled back to the savepoint = %d, want 0", got)
	}
}
