package server_test

import (
	"context"
	"fmt"
	"log"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	idemv1 "github.com/idemhq/idem/proto/idem/v1"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage"
	_ "github.com/idemhq/idem/storage/memory"
)

// Serving idem from a program of your own: open a store, wrap it in a
// Service, and serve it with health and reflection.
func ExampleNewGRPCServer() {
	ctx := context.Background()
	store, err := storage.Open(ctx, "memory://", storage.OpenOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	svc, err := server.New(store)
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()
	srv := server.NewGRPCServer(svc)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(lis)
	defer srv.Stop()

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	c := idemv1.NewIdempotencyServiceClient(conn)
	req := &idemv1.ReserveRequest{Namespace: "/payments.v1.Payments/Charge", Key: "order-42", Fingerprint: []byte("sha256-of-request")}
	r, err := c.Reserve(ctx, req)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r.GetOutcome(), r.GetRecord().GetToken())
	if _, err := c.Complete(ctx, &idemv1.CompleteRequest{Namespace: req.Namespace, Key: req.Key, Token: r.GetRecord().GetToken(), Result: &idemv1.Result{Body: []byte("charged")}}); err != nil {
		log.Fatal(err)
	}
	r, err = c.Reserve(ctx, req)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r.GetOutcome(), string(r.GetRecord().GetResult().GetBody()))
	// Output:
	// RESERVE_OUTCOME_RESERVED 1
	// RESERVE_OUTCOME_COMPLETED charged
}
