package memory_test

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/idemhq/idem/storage"
	"github.com/idemhq/idem/storage/memory"
)

// A page of List copies the records it answers, not every record of the
// namespace after the page's start: paging through N records of size S
// would otherwise copy N²/2·S bytes.
func TestListCopiesOnlyThePage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := memory.New(memory.WithSweepInterval(0))
	defer s.Close()
	const n, size = 64, 256 << 10
	body := bytes.Repeat([]byte{'r'}, size)
	for i := range n {
		id := storage.ID{Tenant: "t", Namespace: "ns", Key: fmt.Sprintf("k%03d", i)}
		if _, _, err := s.Reserve(ctx, storage.ReserveParams{ID: id, Fingerprint: []byte("fp"), LeaseTTL: time.Minute, Retention: time.Hour}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Complete(ctx, storage.CompleteParams{ID: id, Token: 1, Result: &storage.Result{Body: body}, Retention: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	recs, more, err := s.List(ctx, storage.ListParams{Tenant: "t", Namespace: "ns", Limit: 1})
	runtime.ReadMemStats(&after)
	if err != nil || len(recs) != 1 || recs[0].Key != "k000" || !more {
		t.Fatalf("List(limit 1) = %d records, more %v, %v; want k000 and more", len(recs), more, err)
	}
	// The page's record is one body; every record would be n bodies.
	if got := after.TotalAlloc - before.TotalAlloc; got > 8*size {
		t.Errorf("List(limit 1) allocated %d bytes, want at most %d (a few copies of one %d-byte record, not all %d)", got, 8*size, size, n)
	}
}
