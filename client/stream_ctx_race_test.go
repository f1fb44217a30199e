package client_test

import (
	"fmt"
	"io"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/idemhq/idem/client"
)

// A bidi handler whose sender goroutine reads ss.Context() (a common
// pattern) while the receive loop calls Recv.
type concurrentDuplex struct{ testService }

func (s *concurrentDuplex) FullDuplexCall(ss grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, _ = client.TokenFromContext(ss.Context())
		}
	}()
	defer func() { close(stop); <-done }()
	for {
		if _, err := ss.Recv(); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

func TestDedupeStreamContextFromAnotherGoroutine(t *testing.T) {
	ctx := testCtx(t)
	ie := startIdem(t, idemConfig{})
	gs := grpc.NewServer(grpc.StreamInterceptor(client.StreamServerInterceptor(ie.svc, client.WithLogger(quiet), client.WithStreamMessageKey(bodyKey))))
	testgrpc.RegisterTestServiceServer(gs, &concurrentDuplex{})
	l := listen(t, false)
	serve(t, l, gs)
	conn, err := grpc.NewClient(l.target, append(l.dial, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s, err := testgrpc.NewTestServiceClient(conn).FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := s.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: fmt.Appendf(nil, "m%d", i)}}); err != nil {
			t.Fatal(err)
		}
	}
	s.CloseSend()
	if _, err := s.Recv(); err != io.EOF {
		t.Fatal(err)
	}
}
