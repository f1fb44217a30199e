package inbox_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemhq/idem/client/inbox"
)

// taggedPool is a DB wrapper whose type is comparable but whose value is
// not (its interface field holds a slice).
type taggedPool struct {
	*pgxpool.Pool
	tags any
}

// TestProcessWithUnhashableDB: a DB value that cannot key the dialect cache
// is asked each time instead of panicking in the consumer's handler.
func TestProcessWithUnhashableDB(t *testing.T) {
	db := newDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	w := taggedPool{Pool: db, tags: []string{"orders"}}
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("Process() panicked: %v", p)
		}
	}()
	processed, err := inbox.Process(ctx, w, "projector", "m-1", writeEffect("m-1"))
	if !processed || err != nil {
		t.Errorf("Process() = %v, %v; want true, nil", processed, err)
	}
}
