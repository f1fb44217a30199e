package server

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/storage/memory"
)

// BenchmarkServiceReserve measures the handler's own cost per Reserve of a
// new key and per Complete, called directly on a memory store without
// gRPC, so its allocations are the server's and the store's alone:
//
//	go test -run '^$' -bench ServiceReserve -benchmem ./server/
func BenchmarkServiceReserve(b *testing.B) {
	st := memory.New(memory.WithSweepInterval(0))
	defer st.Close()
	svc, err := New(st)
	if err != nil {
		b.Fatal(err)
	}
	defer svc.Close()
	ctx := context.Background()
	fp := []byte("fingerprint-0123456789abcdef")
	var seq atomic.Uint64
	b.Run("Reserve", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			key := "reserve-" + strconv.FormatUint(seq.Add(1), 36)
			if _, err := svc.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "bench", Key: key, Fingerprint: fp}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ReserveComplete", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			key := "complete-" + strconv.FormatUint(seq.Add(1), 36)
			r, err := svc.Reserve(ctx, &idemv1.ReserveRequest{Namespace: "bench", Key: key, Fingerprint: fp})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := svc.Complete(ctx, &idemv1.CompleteRequest{Namespace: "bench", Key: key, Token: r.GetRecord().GetToken(), Result: &idemv1.Result{Body: []byte(`{"status":"ok"}`)}}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
