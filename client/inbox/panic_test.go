package inbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/idemhq/idem/client/inbox"
)

// TestProcessPanicRollsBack: a handler that panics (recovered further up,
// as consumer frameworks do) must not leave its transaction open: the
// connection would stay busy (a pool would never get it back), and the
// uncommitted marker's row lock would block every redelivery for good.
func TestProcessPanicRollsBack(t *testing.T) {
	db := newDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	// A connection of its own, closed at the end even if its transaction
	// leaked, so the test ends instead of hanging.
	conn, err := pgx.ConnectConfig(ctx, db.Config().ConnConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Errorf("recover() = %v, want the handler's panic", p)
			}
		}()
		_, _ = inbox.Process(ctx, conn, "projector", "m-1", func(ctx context.Context, tx pgx.Tx) error {
			if err := writeEffect("m-1")(ctx, tx); err != nil {
				return err
			}
			panic("boom")
		})
	}()
	if st := conn.PgConn().TxStatus(); st != 'I' {
		t.Errorf("connection transaction status after the panic = %q, want 'I' (idle, rolled back)", st)
	}
	rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
	defer rcancel()
	processed, err := inbox.Process(rctx, db, "projector", "m-1", writeEffect("m-1"))
	if !processed || err != nil {
		t.Errorf("redelivery after a panic: Process() = %v, %v; want true, nil", processed, err)
	}
}
