package main

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	"github.com/idemhq/idem/client"
	paymentsv1 "github.com/idemhq/idem/examples/payments/proto/payments/v1"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage/memory"
)

// TestRetryAfterRetentionAnswersTheCharge: a charge whose first attempt
// crashed after its ledger write was posted under token 2. Once idem forgot
// the key, a retry reserves it afresh with token 1; the ledger must answer
// it with the charge, not refuse it as a stale attempt (ABORTED), which a
// caller without retries (grpcurl) gets for a charge that went through.
func TestRetryAfterRetentionAnswersTheCharge(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	clk := clockwork.NewFakeClock()
	store := memory.New(memory.WithLogger(quiet), memory.WithClock(clk))
	defer store.Close()
	srv, err := server.New(store, server.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	p := newPaymentsService(NewLedger())
	crashed := false
	p.afterPost = func(context.Context, string) {
		if !crashed {
			crashed = true
			panic("payments: simulated crash after the ledger write")
		}
	}
	// As main serves it in-process: client.Local, no cache.
	gs := newServer(client.Local(srv), p, client.WithLogger(quiet))
	l := bufconn.Listen(1 << 20)
	go func() { _ = gs.Serve(l) }()
	defer gs.Stop()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return l.DialContext(ctx) }),
		grpc.WithChainUnaryInterceptor(client.UnaryClientInterceptor()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pc := paymentsv1.NewPaymentsServiceClient(conn)
	req := &paymentsv1.ChargeRequest{Account: "alice", AmountCents: 100, Currency: "EUR"}
	kctx := client.WithKey(ctx, "order-1")
	if _, err := pc.Charge(kctx, req); err == nil {
		t.Fatal("first attempt did not crash")
	}
	first, err := pc.Charge(kctx, req) // token 2 finds the posted entry
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(25 * time.Hour) // past idem's default retention
	again, err := pc.Charge(kctx, req)
	if err != nil || !proto.Equal(again, first) {
		t.Errorf("Charge() retried after retention = %v, %v (%v); want the charge %v", again, err, status.Code(err), first)
	}
	clk.Advance(25 * time.Hour)
	_, err = pc.Charge(kctx, &paymentsv1.ChargeRequest{Account: "bob", AmountCents: 200, Currency: "EUR"})
	if reason(err) != client.ReasonKeyReused {
		t.Errorf("Charge(bob) with alice's expired key: %v, want FAILED_PRECONDITION %s", err, client.ReasonKeyReused)
	}
	if bal, n := p.ledger.Balance("alice"); bal != 100 || n != 1 {
		t.Errorf("alice's balance = %d in %d charges, want 100 in 1", bal, n)
	}
}
