package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/idemhq/idem/client"
)

// ctxWatchDuplex takes ss.Context() after the first message, as a sender
// goroutine does when it watches the stream's end, and reports whether that
// context ended while the stream was still open (asking for the next
// message must not end it) and whether it ended once the stream did.
type ctxWatchDuplex struct {
	testService
	earlyDone chan error // nil: still live after the second message
	endedDone chan error // the context's cause once the handler returned
}

func (s *ctxWatchDuplex) FullDuplexCall(ss grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
	if _, err := ss.Recv(); err != nil {
		return err
	}
	ctx := ss.Context()
	if _, ok := client.TokenFromContext(ctx); !ok {
		return fmt.Errorf("no token in the first message's context")
	}
	go func() {
		<-ctx.Done()
		s.endedDone <- context.Cause(ctx)
	}()
	if _, err := ss.Recv(); err != nil {
		return err
	}
	s.earlyDone <- ctx.Err()
	for {
		if _, err := ss.Recv(); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// TestDedupeStreamContextLivesWithTheStream: the context a bidi handler gets
// from ss.Context() is the stream's; settling a message must not cancel it,
// or a sender goroutine watching it stops while the stream is open.
func TestDedupeStreamContextLivesWithTheStream(t *testing.T) {
	ctx := testCtx(t)
	ts := &ctxWatchDuplex{earlyDone: make(chan error, 1), endedDone: make(chan error, 1)}
	ie := startIdem(t, idemConfig{})
	gs := grpc.NewServer(grpc.StreamInterceptor(client.StreamServerInterceptor(ie.svc, client.WithLogger(quiet), client.WithStreamMessageKey(bodyKey))))
	testgrpc.RegisterTestServiceServer(gs, ts)
	l := listen(t, false)
	serve(t, l, gs)
	tc := dialTest(t, l)
	s, err := tc.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"m1", "m2", "m3"} {
		if err := s.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte(b)}}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-ts.earlyDone:
		if err != nil {
			t.Errorf("first message's ss.Context() ended with %v after the handler asked for the next message; want live until the stream ends", err)
		}
	case <-ctx.Done():
		t.Fatal("handler did not get the second message")
	}
	s.CloseSend()
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("stream end: %v", err)
	}
	select {
	case <-ts.endedDone:
	case <-ctx.Done():
		t.Fatal("first message's ss.Context() still live after the stream ended")
	}
}

func dialTest(t *testing.T, l *listener) testgrpc.TestServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(l.target, append(l.dial, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return testgrpc.NewTestServiceClient(conn)
}

// leaseLostDuplex blocks on its first message's context and reports why it ended.
type leaseLostDuplex struct {
	testService
	entered chan struct{}
	cause   chan error
}

func (s *leaseLostDuplex) FullDuplexCall(ss grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
	n := s.calls.Add(1)
	if _, err := ss.Recv(); err != nil {
		return err
	}
	if n == 1 {
		close(s.entered)
		<-ss.Context().Done()
		s.cause <- context.Cause(ss.Context())
		return ss.Context().Err()
	}
	for {
		if _, err := ss.Recv(); err != nil {
			return nil
		}
	}
}

// TestDedupeStreamLeaseLostCancelsHandler: a message's heartbeat that learns
// another attempt took the message over cancels the handler's context, with
// ErrLeaseLost as the cause.
func TestDedupeStreamLeaseLostCancelsHandler(t *testing.T) {
	ctx := testCtx(t)
	storeClk, hbClk := clockwork.NewFakeClock(), clockwork.NewFakeClock()
	ts := &leaseLostDuplex{entered: make(chan struct{}), cause: make(chan error, 1)}
	ie := startIdem(t, idemConfig{clock: storeClk})
	gs := grpc.NewServer(grpc.StreamInterceptor(client.StreamServerInterceptor(ie.svc, client.WithLogger(quiet),
		client.WithStreamMessageKey(bodyKey), client.WithHeartbeatClock(hbClk), client.WithWait(0),
		client.WithLease(2*time.Second, 2*time.Second, 2*time.Second))))
	testgrpc.RegisterTestServiceServer(gs, ts)
	l := listen(t, false)
	serve(t, l, gs)
	tc := dialTest(t, l)
	send := func(s grpc.BidiStreamingClient[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) {
		if err := s.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("m1")}}); err != nil {
			t.Fatal(err)
		}
	}
	s1, err := tc.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send(s1)
	<-ts.entered
	if err := hbClk.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	storeClk.Advance(3 * time.Second) // the lease is gone before any heartbeat
	s2, err := tc.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send(s2) // takes the message over
	s2.CloseSend()
	if _, err := s2.Recv(); err != io.EOF {
		t.Fatalf("takeover stream: %v", err)
	}
	hbClk.Advance(time.Second)
	select {
	case err := <-ts.cause:
		if !errors.Is(err, client.ErrLeaseLost) {
			t.Errorf("stale handler's context cause = %v, want ErrLeaseLost", err)
		}
	case <-ctx.Done():
		t.Fatal("stale handler's context not cancelled after the lease was lost")
	}
	s1.CloseSend()
	_, _ = s1.Recv()
}
