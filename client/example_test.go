package client_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/retry"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/idemhq/idem/client"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage/memory"
)

type flakyOnce struct {
	testgrpc.UnimplementedTestServiceServer
	runs int
}

func (f *flakyOnce) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	f.runs++
	if f.runs == 1 {
		// The side effect happened but the answer is lost, as if the
		// connection dropped: the client retries with the same key.
		return nil, status.Error(codes.Unavailable, "connection reset")
	}
	tok, _ := client.TokenFromContext(ctx)
	md, _ := metadata.FromIncomingContext(ctx)
	return &testgrpc.SimpleResponse{Username: fmt.Sprintf("run %d, token %d, key is a UUID: %v", f.runs, tok, len(md.Get(client.MetadataKey)[0]) == 36)}, nil
}

// The chain order on both sides. Client: the idempotency interceptor
// outside (before) retry, so every attempt carries the key it chose once.
// Server: authentication (none here) outside idem, idem outside recovery,
// so recovery turns a panic into a transient error and idem releases the key.
func ExampleUnaryClientInterceptor() {
	store := memory.New()
	defer store.Close()
	idem, err := server.New(store)
	if err != nil {
		log.Fatal(err)
	}
	defer idem.Close()
	svc := client.Local(idem) // or client.New("dns:///idem:7070", …) for a shared idemd

	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(
			// auth.UnaryServerInterceptor(…) would go here, first.
			client.UnaryServerInterceptor(svc),
			recovery.UnaryServerInterceptor(),
		),
	)
	testgrpc.RegisterTestServiceServer(srv, &flakyOnce{})
	l := bufconn.Listen(1 << 20)
	go srv.Serve(l)
	defer srv.Stop()

	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return l.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainUnaryInterceptor(
			client.UnaryClientInterceptor(), // outside: one key per logical call
			retry.UnaryClientInterceptor( // inside: every attempt reuses it
				retry.WithMax(3), retry.WithCodes(codes.Unavailable),
				retry.WithBackoff(retry.BackoffLinear(10*time.Millisecond))),
		),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	resp, err := testgrpc.NewTestServiceClient(conn).UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.GetUsername())
	// Output: run 2, token 2, key is a UUID: true
}
