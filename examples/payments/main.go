package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/idemhq/idem/client"
	paymentsv1 "github.com/idemhq/idem/examples/payments/proto/payments/v1"
	"github.com/idemhq/idem/server"
	"github.com/idemhq/idem/storage/memory"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8081", "address to serve PaymentsService on")
	target := flag.String("idem", "", "idemd gRPC target (e.g. dns:///127.0.0.1:50051); empty runs idem in-process over a memory store")
	plaintext := flag.Bool("idem-insecure", false, "connect to idemd without TLS")
	token := flag.String("idem-token", os.Getenv("IDEM_TOKEN"), "bearer token for idemd")
	flag.Parse()
	if err := run(*listen, *target, *plaintext, *token); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// newIdem returns the Service the interceptors use and a function that
// releases it.
func newIdem(target string, plaintext bool, token string) (client.Service, func(), error) {
	if target == "" {
		store := memory.New()
		srv, err := server.New(store)
		if err != nil {
			store.Close()
			return nil, nil, err
		}
		return client.Local(srv), func() { srv.Close(); store.Close() }, nil
	}
	opts := []client.Option{client.WithCache(10_000)}
	if plaintext {
		opts = append(opts, client.WithInsecure())
	}
	if token != "" {
		opts = append(opts, client.WithBearerToken(token))
	}
	c, err := client.New(target, opts...)
	if err != nil {
		return nil, nil, err
	}
	return c, func() { c.Close() }, nil
}

// newServer wires the chain: authentication, if any, would go first; idem
// next; recovery innermost, so a crashing handler answers INTERNAL, a
// transient code, and idem releases the key for the retry.
func newServer(svc client.Service, p *paymentsService, opts ...client.InterceptorOption) *grpc.Server {
	opts = append([]client.InterceptorOption{
		// sent_at changes on every retry; it must not make a retry look like another request.
		client.WithFingerprintExclude("payments.v1.ChargeRequest.sent_at"),
	}, opts...)
	rec := recovery.WithRecoveryHandler(func(p any) error { return status.Errorf(codes.Internal, "payments: handler crashed") })
	gs := grpc.NewServer(
		grpc.ChainUnaryInterceptor(client.UnaryServerInterceptor(svc, opts...), recovery.UnaryServerInterceptor(rec)),
		grpc.ChainStreamInterceptor(client.StreamServerInterceptor(svc, opts...), recovery.StreamServerInterceptor(rec)),
	)
	paymentsv1.RegisterPaymentsServiceServer(gs, p)
	return gs
}

func run(listen, target string, plaintext bool, token string) error {
	svc, closeIdem, err := newIdem(target, plaintext, token)
	if err != nil {
		return err
	}
	defer closeIdem()
	gs := newServer(svc, newPaymentsService(NewLedger()))
	reflection.Register(gs)
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		gs.GracefulStop()
	}()
	slog.Info("payments serving", "addr", l.Addr().String(), "idem", target)
	return gs.Serve(l)
}
